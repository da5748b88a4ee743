"""Training engine: losses see the right pairs, schedules have the claimed shape, runs resume and scale out."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.core.files import partial_dir
from tickettune.data.pairs_io import write_pairs
from tickettune.training.config import SCHEDULERS, resolve_config
from tickettune.training.dataset import TrainingData, assign_phases, load_pairs, phase_epochs, refuse_test_texts_in_training
from tickettune.training.lora import add_lora, lora_targets
from tickettune.training.losses import HybridLoss, loss_columns
from tickettune.training.run import train
from tickettune.training.schedule import HF_SCHEDULER_NAMES, Phase, Plan, plan_batches, plan_scheduler
from tickettune.training.trainer import precision_flags, report_targets

TOPICS = {
    "printer": ["printer jam on floor {}", "cannot print to the printer {}", "printer offline in room {}"],
    "vpn": ["vpn connection drops {}", "cannot connect to vpn from home {}", "vpn token expired {}"],
    "email": ["outlook not syncing mail {}", "email bounced back {}", "mailbox over quota {}"],
    "password": ["password reset needed {}", "account locked out {}", "forgot my password {}"],
}
# Small but with graded labels, so Spearman is not stuck on ties; ~90 steps with the knobs below.
KNOBS = ["phase_epochs=[2,2,2]", "batch_size=8", "lr=0.001", "max_seq_length=32", "eval_steps=20", "save_steps=10",
         "bootstrap_resamples=100", "threshold_cv_folds=3"]


def _pairs(split: str, count: int, rng: np.random.Generator, per_template: int) -> pd.DataFrame:
    texts = [(topic, t, template.format(f"{split}{i}")) for topic, templates in TOPICS.items()
             for t, template in enumerate(templates) for i in range(per_template)]
    rows = []
    for _ in range(count):
        a, b = rng.choice(len(texts), 2, replace=False)
        if rng.random() < 0.5:  # half the draws pick a partner from the same topic
            same = [i for i, x in enumerate(texts) if x[0] == texts[a][0] and i != a]
            b = same[rng.integers(len(same))]
        (ta, ka, xa), (tb, kb, xb) = texts[a], texts[b]
        label = (0.9 if ka == kb else 0.7) if ta == tb else (0.2 if rng.random() < 0.5 else 0.0)
        rows.append({"text1": xa, "text2": xb, "label": label})
    return pd.DataFrame(rows).drop_duplicates(["text1", "text2"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("pairs")
    train_pairs = _pairs("tr", 125, rng, 4)
    train_pairs["phase"] = [("easy", "medium", "hard")[i % 3] for i in range(len(train_pairs))]
    write_pairs(train_pairs, folder / "train.jsonl")
    write_pairs(_pairs("ev", 60, rng, 2), folder / "eval.jsonl")
    write_pairs(_pairs("te", 60, rng, 2), folder / "test.jsonl")
    return folder


pytestmark = pytest.mark.usefixtures("one_thread")


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _config(model: Path, *extra: str):
    return resolve_config(sets=KNOBS + list(extra), model_name=str(model))


def _cli_args(pairs_dir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    sets = [arg for knob in KNOBS + list(extra) for arg in ("--set", knob)]
    return ["train", "--pairs", str(pairs_dir), "-m", str(model), *sets, "-o", str(out)]


@pytest.fixture(scope="module")
def reference(tiny_model, pairs_dir, tmp_path_factory):
    """One uninterrupted in-process run, with a merged copy; several tests read it."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    return train(_config(tiny_model), pairs_dir, out, merge=True, show_progress=False)


# ---- losses see only what they should ------------------------------------------------------------

def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "text1": ["a", "a", "a", "b", "b", "c", "d"],
        "text2": ["a2", "x", "y", "b2", "z", "c2", "d2"],
        "label": [1.0, 0.0, 0.1, 0.8, 0.3, 0.9, 0.6],
        "phase": ["easy"] * 7,
    })


def test_mnrl_and_triplet_rows_come_only_from_similar_pairs(tiny_model):
    frame = _frame()
    similar = {(a, b) for a, b, y in frame[["text1", "text2", "label"]].itertuples(index=False) if y >= 0.5}
    dissimilar = {(a, b) for a, b, y in frame[["text1", "text2", "label"]].itertuples(index=False) if y < 0.5}
    for loss in ("mnrl", "triplet"):
        rows, columns = loss_columns(frame, _config(tiny_model, f"loss={loss}"))
        assert columns[:2] == ["anchor", "positive"]
        pairs = set(zip(rows["anchor"], rows["positive"]))
        assert pairs <= similar and not pairs & dissimilar
        if "negative" in columns:
            assert all((a, n) in dissimilar for a, n in zip(rows["anchor"], rows["negative"]))
    # mnrl keeps every similar pair (c and d have no dissimilar partner, so no negative column)
    rows, columns = loss_columns(frame, _config(tiny_model, "loss=mnrl"))
    assert len(rows) == len(similar) and columns == ["anchor", "positive"]
    # triplet keeps only anchors with a dissimilar partner: a and b
    rows, _ = loss_columns(frame, _config(tiny_model, "loss=triplet"))
    assert sorted(rows["anchor"]) == ["a", "b"]


class _Spy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[torch.Tensor]] = []

    def compute_loss_from_embeddings(self, embeddings, labels):
        self.seen.append([e.detach().clone() for e in embeddings])
        return embeddings[0].sum() * 0 + 1.0


def test_hybrid_feeds_mnrl_only_the_similar_rows():
    pair, mnrl = _Spy(), _Spy()
    loss = HybridLoss(model=None, pair=pair, mnrl=mnrl, mnrl_weight=0.25, binary_labels=False)
    rows = torch.arange(6, dtype=torch.float).unsqueeze(1).repeat(1, 4)  # row i is filled with i
    labels = torch.tensor([1.0, 0.0, 0.7, 0.2, 0.5, 0.49])
    parts = loss.compute_loss_from_embeddings([rows, rows + 100], labels)
    assert pair.seen[0][0][:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # the pair loss sees every row
    anchors, positives = mnrl.seen[0]
    assert anchors[:, 0].tolist() == [0, 2, 4] and positives[:, 0].tolist() == [100, 102, 104]
    assert parts["mnrl"].item() == pytest.approx(0.25) and parts["pair"].item() == pytest.approx(0.75)


# ---- the plan: phases in order, batches without repeats, learning-rate curves ---------------------

def test_curriculum_keeps_phase_order_and_mixing_mixes():
    rows = {"easy": np.arange(0, 40), "medium": np.arange(40, 80), "hard": np.arange(80, 120)}
    epochs = {"easy": 1, "medium": 2, "hard": 0.5}
    plan = plan_batches(rows, epochs, batch_size=8, seed=1)
    assert [p.name for p in plan.phases] == ["easy", "medium", "hard"]
    assert [p.steps for p in plan.phases] == [5, 10, 3] and plan.total_steps == 18
    for phase in plan.phases:
        members = set(rows[phase.name].tolist())
        for batch in plan.batches[phase.start_step:phase.end_step]:
            assert set(batch) <= members
    counts = np.bincount(np.concatenate(plan.batches), minlength=120)
    assert (counts[:40] == 1).all() and (counts[40:80] == 2).all() and counts[80:].sum() == 20

    mixed = plan_batches(rows, epochs, batch_size=8, seed=1, curriculum=False)
    assert [p.name for p in mixed.phases] == ["mixed"]
    assert np.array_equal(np.bincount(np.concatenate(mixed.batches), minlength=120), counts)
    phase_of = np.repeat([0, 1, 2], 40)
    assert sum(len(set(phase_of[b])) > 1 for b in mixed.batches) > len(mixed.batches) // 2


def test_in_batch_negative_batches_never_repeat_a_text_and_split_across_processes():
    anchors = [f"anchor {i % 10}" for i in range(60)]  # each anchor text recurs 6 times
    texts = [(a, f"positive {i}") for i, a in enumerate(anchors)]
    rows = {"easy": np.arange(30), "hard": np.arange(30, 60)}
    plan = plan_batches(rows, {"easy": 1, "hard": 1}, batch_size=4, seed=0, world_size=2, accumulation=2, texts=texts)
    for i in range(0, len(plan.batches), 2):  # a global batch = the two processes' chunks
        merged = [t for r in plan.batches[i] + plan.batches[i + 1] for t in texts[r]]
        assert len(merged) == len(set(merged))
    assert len(plan.batches) == 2 * 2 * plan.total_steps  # processes x accumulation x steps
    assert all(len(b) >= 1 for b in plan.batches)
    seen = sorted(np.concatenate(plan.batches).tolist())
    assert len(seen) + plan.dropped == 60 and len(set(seen)) == len(seen)


def test_length_grouping_batches_similar_lengths():
    lengths = np.random.default_rng(0).integers(5, 200, 400)
    rows = {"easy": np.arange(400)}
    spread = {}
    for grouped in (False, True):
        plan = plan_batches(rows, {"easy": 1}, 16, seed=0, lengths=lengths if grouped else None)
        spread[grouped] = np.mean([np.ptp(lengths[b]) for b in plan.batches])
    assert spread[True] < spread[False] / 5


def _plan(lengths: list[int]) -> Plan:
    phases, step = [], 0
    for name, steps in zip(("easy", "medium", "hard"), lengths):
        phases.append(Phase(name, step, step + steps, 1, steps))
        step += steps
    return Plan(batches=[], phases=phases)


def _learning_rates(plan: Plan, scheduler: str, warmup: int, warmup_ratio: float | None, per_phase: bool) -> list[float]:
    """The learning rate (peak 1) at each optimizer step of the plan, as a trainer steps the schedule."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = plan_scheduler(optimizer, plan, scheduler, warmup, warmup_ratio, per_phase)
    rates = []
    for _ in range(plan.total_steps):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    return rates


def test_every_scheduler_has_a_transformers_name():
    assert set(HF_SCHEDULER_NAMES) == set(SCHEDULERS)


def test_per_phase_schedule_restarts_warmup_and_decay_at_each_phase():
    plan = _plan([10, 20, 30])
    rates = _learning_rates(plan, "warmup_cosine", 0, 0.2, per_phase=True)
    # phase warmups: ceil(0.2 x 10) = 2, ceil(0.2 x 20) = 4, ceil(0.2 x 30) = 6
    assert [rates[s] for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert [rates[s] for s in (10, 12, 14)] == [0.0, 0.5, 1.0]
    assert [rates[s] for s in (30, 33, 36)] == [0.0, 0.5, 1.0]
    assert rates[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert rates[59] == pytest.approx(0.5 * (1 + math.cos(math.pi * 23 / 24)))
    linear = _learning_rates(plan, "linear", 3, None, per_phase=True)
    assert [linear[s] for s in (10, 13, 29)] == [0.0, 1.0, pytest.approx(1 / 17)]
    whole = _learning_rates(plan, "warmup_cosine", 0, 0.2, per_phase=False)  # one warmup of 12 steps for the run
    assert whole[10] == pytest.approx(10 / 12)
    assert whole[36] == pytest.approx(0.5 * (1 + math.cos(math.pi * 24 / 48)))
    # a phase without steps (epochs 0) neither restarts nor shifts the others
    rates = _learning_rates(_plan([10, 0, 30]), "linear", 3, None, True)[10:14]
    assert rates == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]


def test_per_phase_schedule_resumes_from_its_saved_state(tmp_path):
    # What --resume does: the trainer saves the scheduler's state_dict in a checkpoint and loads it into a new one.
    plan = _plan([10, 20, 30])
    whole = _learning_rates(plan, "warmup_cosine", 0, 0.2, per_phase=True)

    def fresh():
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        return optimizer, plan_scheduler(optimizer, plan, "warmup_cosine", 0, 0.2, per_phase=True)

    optimizer, schedule = fresh()
    for _ in range(15):
        optimizer.step()
        schedule.step()
    torch.save(schedule.state_dict(), tmp_path / "scheduler.pt")
    optimizer, schedule = fresh()
    schedule.load_state_dict(torch.load(tmp_path / "scheduler.pt", weights_only=True))
    resumed = []
    for _ in range(15, 60):
        resumed.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert resumed == pytest.approx(whole[15:])


# ---- model set-up: LoRA targets, precision, trackers ----------------------------------------------

def test_lora_targets_by_architecture_and_full_fine_tuning(tiny_model):
    from transformers import MPNetConfig, MPNetModel

    from tickettune.core.models import load_model

    model = load_model(str(tiny_model))
    assert lora_targets(model) == ["query", "key", "value", "dense"]
    trainable, total = add_lora(model, _config(tiny_model))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert 0 < trainable < total / 10 and all("lora_" in n for n in names)
    assert not any("pooler" in n for n in names)  # unused by mean pooling
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names} == {"query", "key", "value", "dense"}
    full = load_model(str(tiny_model))
    assert sum(p.requires_grad for p in full.parameters()) == len(list(full.parameters()))  # use_lora false: all

    mpnet = MPNetModel(MPNetConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64))
    fake = type("Fake", (), {"transformers_model": mpnet})()
    modules = [n for n, _ in mpnet.named_modules()]
    targets = lora_targets(fake)
    assert "attn.q" in targets and "intermediate.dense" in targets
    assert all(any(n.endswith("." + t) for n in modules) for t in targets)
    with pytest.raises(UserError, match="match no module"):
        add_lora(load_model(str(tiny_model)), _config(tiny_model, "lora_target_modules=[q_proj]"))


def test_precision_and_tracker_pass_through():
    import importlib.util

    assert precision_flags("no") == {"bf16": False, "fp16": False}
    if not torch.cuda.is_available():
        assert precision_flags("auto") == {"bf16": False, "fp16": False}
        with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
            precision_flags("fp16")
    assert report_targets("none") == []
    for tracker, module in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        if importlib.util.find_spec(module):
            assert report_targets(tracker) == [tracker]
        else:
            with pytest.raises(UserError, match=f"pip install {module}"):
                report_targets(tracker)


# ---- phases and input checks ----------------------------------------------------------------------

def test_phase_rules_and_leakage_guard(tiny_model, pairs_dir, tmp_path):
    pairs = load_pairs(pairs_dir)
    config = _config(tiny_model)
    assert phase_epochs(pairs.train, config) == {"easy": 2, "medium": 2, "hard": 2}
    no_medium = pairs.train[pairs.train["phase"] != "medium"]
    with pytest.raises(UserError, match="phase 'medium' has no training pairs"):
        phase_epochs(no_medium, config)
    assert phase_epochs(no_medium, _config(tiny_model, "phase_epochs=[1,0,3]")) == {"easy": 1, "hard": 3}
    single = assign_phases(pairs.train, "single")
    assert phase_epochs(single, config) == {"all": 2}
    leaky = TrainingData(pairs.train, pairs.eval, pd.concat([pairs.test, pairs.train.head(1)], ignore_index=True))
    with pytest.raises(UserError, match="also appear in the training pairs.*--allow-leakage"):
        refuse_test_texts_in_training(leaky)
    refuse_test_texts_in_training(pairs)
    shutil.copytree(pairs_dir, tmp_path / "no-test")
    (tmp_path / "no-test" / "test.jsonl").unlink()
    with pytest.raises(UserError, match="has no test set"):
        load_pairs(tmp_path / "no-test")


def test_evaluate_refuses_test_pairs_the_model_was_trained_on(reference, pairs_dir, tmp_path, capsys):
    from tickettune.data.leakage import TRAINING_TEXTS, fingerprint

    stored = json.loads((reference.out / "model" / TRAINING_TEXTS).read_text())["fingerprints"]
    train_pairs = load_pairs(pairs_dir).train
    assert fingerprint(train_pairs["text1"][0]) in stored and len(stored) <= 2 * len(train_pairs)
    assert (reference.out / "model-merged" / TRAINING_TEXTS).is_file()
    assert not any(train_pairs["text1"][0] in line for line in (reference.out / "model" / TRAINING_TEXTS).open())
    leaky = tmp_path / "leaky.jsonl"
    pd.concat([load_pairs(pairs_dir).test, train_pairs.head(2)[["text1", "text2", "label"]]]).to_json(
        leaky, orient="records", lines=True)
    out = tmp_path / "m.json"
    for model in ("model", "model-merged"):  # the fingerprints travel with the merged copy too
        capsys.readouterr()
        assert main(["evaluate", "--model", str(reference.out / model), "--pairs", str(leaky), "--json", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "test texts also appear in the model's training pairs" in err and "--allow-leakage" in err
        assert len(err.splitlines()) == 1 and not out.exists()
    # Given training pairs explicitly, the check works for any model, e.g. one trained elsewhere.
    assert main(["evaluate", "--model", reference.config.model_name, "--pairs", str(leaky),
                 "--train-pairs", str(pairs_dir)]) == 2
    assert "train.jsonl" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(reference.out / "model"), "--pairs", str(leaky), "--json", str(out),
                 "--allow-leakage"]) == 0 and out.exists()
    assert main(["evaluate", "--model", str(reference.out / "model"), "--pairs", str(pairs_dir)]) == 0
    assert "no test text is among the model's training texts" in capsys.readouterr().out


def test_mask_pii_config_masks_every_text_before_training_and_reports(tiny_model, pairs_dir, tmp_path):
    from tickettune.data.pairs_io import read_pairs

    folder = tmp_path / "with-pii"
    folder.mkdir()
    for name in ("train.jsonl", "eval.jsonl", "test.jsonl"):
        frame = read_pairs(pairs_dir / name)
        frame["text1"] = frame["text1"] + " <script>x</script> mail jane.roe@example.com from 10.1.2.3"
        write_pairs(frame, folder / name)
    result = train(_config(tiny_model, "mask_pii=true", "phase_epochs=[1,1,1]"), folder, tmp_path / "out",
                   show_progress=False)
    written = "".join(p.read_text(errors="replace") for p in result.out.rglob("*") if p.suffix in (".md", ".html", ".json"))
    assert "jane.roe@example.com" not in written and "10.1.2.3" not in written
    # The model card carries no ticket text at all, masked or not: only the report shows (escaped, masked) text.
    card = (result.out / "model" / "README.md").read_text()
    assert "[EMAIL]" not in card and "<script>" not in card and "Samples" not in card
    assert "[EMAIL]" in (result.out / "report.html").read_text()
    assert "<script>x" not in (result.out / "report.html").read_text()


def test_difficulty_phases_are_terciles_of_the_base_models_difficulty(tiny_model, pairs_dir):
    from tickettune.core.models import load_model
    from tickettune.core.similarity import pair_difficulty, pair_scores

    model = load_model(str(tiny_model))
    train_pairs = load_pairs(pairs_dir).train.drop(columns="phase")
    phased = assign_phases(train_pairs, "difficulty", model, seed=0)
    difficulty = pd.Series(pair_difficulty(train_pairs["label"], pair_scores(model, train_pairs)))
    for _, group in phased.groupby("label"):
        counts = group["phase"].value_counts()
        assert set(counts.index) == {"easy", "medium", "hard"} and counts.max() - counts.min() <= 1
        by_phase = difficulty[group.index].groupby(group["phase"])
        assert by_phase.max()["easy"] <= by_phase.min()["medium"] and by_phase.max()["medium"] <= by_phase.min()["hard"]


def test_cli_refuses_bad_requests_with_one_line(tiny_model, pairs_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "metrics.json").write_text("{}")
    cases = {
        "already holds results": _cli_args(pairs_dir, tiny_model, taken),
        "unknown preset": _cli_args(pairs_dir, tiny_model, tmp_path / "a") + ["--preset", "fastest"],
        "not allowed": _cli_args(pairs_dir, tiny_model, tmp_path / "b", "loss=arcface"),
        "nothing to resume": _cli_args(pairs_dir, tiny_model, tmp_path / "c") + ["--resume"],
        "exceeds the 128 positions": _cli_args(pairs_dir, tiny_model, tmp_path / "e", "max_seq_length=512"),
        "needs train, eval and test": ["train", "--train", str(pairs_dir / "train.jsonl"), "-o", str(tmp_path / "d")],
    }
    for message, args in cases.items():
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists() and not partial_dir(tmp_path / "c").exists()


# ---- whole runs ------------------------------------------------------------------------------------

def test_out_has_every_file_and_the_best_checkpoint_is_restored(reference, pairs_dir, tiny_model):
    from sentence_transformers import SentenceTransformer

    from tickettune.core.similarity import pair_scores
    from tickettune.evaluation.judge import compute_metrics

    out = reference.out
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "figures", "metrics.json", "model", "model-merged",
                                                     "report.html", "report.md", "training_log.csv", "training_log.json"]
    assert "<img" in (out / "report.html").read_text() and "training" in {p.stem for p in (out / "figures").iterdir()}
    assert not partial_dir(out).exists()
    assert (out / "model" / "adapter_model.safetensors").is_file() and "tickettune" in (out / "model" / "README.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    # Pair files without tickets: their test pairs alone, named for what they are not known to be.
    assert set(metrics) == {"test"} and set(metrics["test"]) == {"model", "baseline", "change"}
    assert metrics["test"]["model"]["n_pairs"] == len(load_pairs(pairs_dir).test)

    log = reference.log
    assert log == json.loads((out / "training_log.json").read_text())
    assert [p["name"] for p in log["phases"]] == ["easy", "medium", "hard"]
    ends = {p["end_step"] for p in log["phases"]}
    evaluated = {e["step"] for e in log["evals"]}
    assert ends <= evaluated and 0 in evaluated and 20 in evaluated
    best = max(log["evals"], key=lambda e: e["spearman"])
    assert log["best"] == {"step": best["step"], "value": best["spearman"]}

    # the model in OUT scores exactly the logged best on the eval pairs
    model = SentenceTransformer(str(out / "model"))
    eval_pairs = load_pairs(pairs_dir).eval
    restored = compute_metrics(eval_pairs["label"], pair_scores(model, eval_pairs), 3, 42)["spearman"]
    assert restored == pytest.approx(log["best"]["value"], abs=1e-6)
    merged = SentenceTransformer(str(out / "model-merged"))
    texts = ["printer jam on floor 3", "vpn token expired again"]
    cos = np.sum(model.encode(texts, normalize_embeddings=True) * merged.encode(texts, normalize_embeddings=True), axis=1)
    assert cos.min() > 0.9999

    # the trainer ran on the plan's schedule: logged learning rates follow one warmup_cosine over the run
    rates = _learning_rates(_plan([log["total_steps"]]), "warmup_cosine", 0, 0.1, per_phase=False)
    for row in log["steps"][:: 7]:
        assert row["learning_rate"] == pytest.approx(1e-3 * rates[row["step"] - 1])

    with pytest.raises(UserError, match="already holds results"):
        train(reference.config, pairs_dir, out, show_progress=False)


def test_same_seed_gives_the_same_training_metrics_on_cpu(reference, pairs_dir, tmp_path):
    again = train(reference.config, pairs_dir, tmp_path / "again", show_progress=False)
    assert [s["loss"] for s in again.log["steps"]] == [s["loss"] for s in reference.log["steps"]]
    assert again.log["evals"] == reference.log["evals"] and again.metrics == reference.metrics


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_resume_after_a_kill_matches_an_uninterrupted_run(kill, reference, tiny_model, pairs_dir, tmp_path):
    # The kill lands at a random step: after a random checkpoint (not the last), plus a random delay.
    # Seeded per signal so that a failure can be replayed.
    rng = np.random.default_rng(int(kill))
    last = max(e["step"] for e in reference.log["evals"])
    after = int(rng.choice(np.arange(10, last - 5, 10)))
    out = tmp_path / "killed"
    checkpoints = partial_dir(out) / "checkpoints"
    # A suite started in the background by a shell without job control inherits SIGINT ignored, and Python then
    # never turns it into KeyboardInterrupt: the run must get Ctrl-C as a terminal would deliver it.
    run = subprocess.Popen([sys.executable, "-m", "tickettune", *_cli_args(pairs_dir, tiny_model, out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_THREAD,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (checkpoints / f"checkpoint-{after}" / "trainer_state.json").exists() and run.poll() is None:
        assert time.monotonic() < deadline, f"checkpoint-{after} did not appear"
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.5))
    run.send_signal(kill)
    code = run.wait()
    err = run.stderr.read().decode()
    if kill == signal.SIGKILL:
        assert code == -signal.SIGKILL, err[-2000:]
    else:  # Ctrl-C: one line, exit 2, the checkpoints kept for --resume
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: interrupted"), err[-2000:]
        assert "Traceback" not in err
    assert not out.exists() and checkpoints.is_dir()

    with pytest.raises(UserError, match="pass --resume to continue it"):
        train(reference.config, pairs_dir, out, show_progress=False)
    with pytest.raises(UserError, match="changed setting 'lr'"):
        train(_config(tiny_model, "lr=0.002"), pairs_dir, out, resume=True, show_progress=False)

    # a damaged checkpoint is named, not a traceback
    damaged = tmp_path / "damaged"
    shutil.copytree(partial_dir(out), partial_dir(damaged))
    for weights in partial_dir(damaged).glob("checkpoints/checkpoint-*/adapter_model.safetensors"):
        weights.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="corrupted"):
        train(reference.config, pairs_dir, damaged, resume=True, show_progress=False)

    resumed = subprocess.run([sys.executable, "-m", "tickettune", *_cli_args(pairs_dir, tiny_model, out), "--resume"],
                             capture_output=True, text=True, env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-" in resumed.stderr
    got, want = json.loads((out / "metrics.json").read_text()), reference.metrics
    for key in ("spearman", "pearson", "roc_auc"):
        assert got["test"]["model"][key] == pytest.approx(want["test"]["model"][key], abs=0.005)
    log = json.loads((out / "training_log.json").read_text())
    assert [e["step"] for e in log["evals"]] == [e["step"] for e in reference.log["evals"]]
    assert log["best"]["step"] == reference.log["best"]["step"]
    assert not partial_dir(out).exists()


@pytest.fixture
def no_dropout_model(tiny_model, tmp_path) -> Path:
    """The tiny model without dropout: then two processes and one see exactly the same arithmetic."""
    folder = tmp_path / "tiny-no-dropout"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_two_processes_match_one_with_the_same_global_batch(no_dropout_model, pairs_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo) x batch 4 against 1 process x batch 8.

    Both runs see the same global batches. With no dropout and the mean-reduced cosine loss the
    only difference is DDP averaging two half-batch means where a batch has odd size, so the test
    metrics must agree within 0.005 (measured: about 1e-3 or less).
    """
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    knobs = ("loss=cosine", "lora_dropout=0", "phase_epochs=[1,1,1]", "save_steps=null")
    single = train(_config(no_dropout_model, *knobs, "batch_size=8"), pairs_dir, tmp_path / "one", show_progress=False)
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "tickettune",
                          *_cli_args(pairs_dir, no_dropout_model, tmp_path / "two", *knobs, "batch_size=4")],
                         capture_output=True, text=True, env=ONE_THREAD)
    assert two.returncode == 0, two.stderr[-3000:]
    log = json.loads((tmp_path / "two" / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["total_steps"] == single.log["total_steps"]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("spearman", "pearson"):
        assert metrics["test"]["model"][key] == pytest.approx(single.metrics["test"]["model"][key], abs=0.005)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(single.files)
