"""Sweeps: the train hook stops a run, trials are drawn and pruned, workers share one SQLite study."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.data.pairs_io import write_pairs
from tickettune.training.config import resolve_config
from tickettune.training.run import train
from tickettune.training.sweep import SearchSpace, Sweep, open_storage, train_phases
from tickettune.training.trainer import EVAL_KEYS

TEMPLATES = {"printer": "printer {} jams on every page", "vpn": "vpn drops at branch {}",
             "mail": "mailbox {} is over quota", "login": "account {} is locked after login attempts"}
# ~6 optimizer steps per trial: 36 train pairs in 3 phases, batch 8, one epoch per phase.
KNOBS = ["batch_size=8", "max_seq_length=16", "bootstrap_resamples=100", "threshold_cv_folds=2", "eval_subset=null"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _split(prefix: str, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """Half the pairs share a topic (label 0.9), half do not (0.1); every text is distinct."""
    topics = list(TEMPLATES)
    rows = []
    for i in range(count):
        first = topics[rng.integers(len(topics))]
        second = first if i % 2 == 0 else rng.choice([t for t in topics if t != first])
        rows.append({"text1": TEMPLATES[first].format(f"{prefix}{i}"), "text2": TEMPLATES[second].format(f"{prefix}{i}x"),
                     "label": 0.9 if first == second else 0.1})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("sweep-pairs")
    train_pairs = _split("t", 36, rng)
    train_pairs["phase"] = [("easy", "medium", "hard")[i % 3] for i in range(len(train_pairs))]
    write_pairs(train_pairs, folder / "train.jsonl")
    write_pairs(_split("e", 24, rng), folder / "eval.jsonl")
    write_pairs(_split("s", 24, rng), folder / "test.jsonl")
    return folder


@pytest.fixture(scope="module")
def optuna():
    """The sweep tests need Optuna; the train hook's test does not."""
    return pytest.importorskip("optuna", reason="tickettune sweep needs optuna: pip install 'tickettune[sweep]'")


pytestmark = pytest.mark.usefixtures("one_thread")


def _base(model: Path, *extra: str):
    return resolve_config(sets=KNOBS + list(extra), model_name=str(model))


# ---- the train hook --------------------------------------------------------------------------------

def test_on_evaluate_sees_each_eval_and_returning_true_stops_training(tiny_model, pairs_dir, tmp_path):
    config = _base(tiny_model, "phase_epochs=[2,2,2]", "eval_steps=2", "loss=cosent")
    seen: list[tuple[int, dict]] = []

    def stop_at_step_4(step: int, metrics: dict) -> bool:
        seen.append((step, metrics))
        return step >= 4

    result = train(config, pairs_dir, tmp_path / "stopped", show_progress=False, on_evaluate=stop_at_step_4)
    log = result.log
    assert log["total_steps"] == 12 and log["stopped_at_step"] == 4
    assert log["steps"][-1]["step"] == 4  # not one step more
    # each evaluation after a trained step (the untuned model's at step 0 is not offered), with the logged metrics
    logged = [e for e in log["evals"] if e["step"] > 0]
    assert [step for step, _ in seen] == [e["step"] for e in logged] == [2, 4]
    assert all(set(m) == set(EVAL_KEYS) and m["spearman"] == pytest.approx(e["spearman"]) for (_, m), e in zip(seen, logged))
    assert (tmp_path / "stopped" / "model").is_dir()  # a stopped run still writes its outputs


# ---- the search space ------------------------------------------------------------------------------

def test_search_space_draws_each_knob_and_respects_fixed_ones(optuna, tiny_model):
    base = _base(tiny_model, "lora_r=16", "lora_alpha=32")
    params = {"lr": 2e-4, "epochs_easy": 2, "epochs_hard": 3, "lora_r": 4, "loss": "mnrl", "scheduler": "linear",
              "schedule_per_phase": True}
    config = SearchSpace().suggest(optuna.trial.FixedTrial(params), base, ["easy", "hard"])
    assert (config.lr, config.phase_epochs, config.lora_r, config.lora_alpha, config.loss, config.scheduler,
            config.schedule_per_phase) == (2e-4, [2, 0, 3], 4, 8, "mnrl", "linear", True)
    assert config.batch_size == 8 and config.max_seq_length == 16  # not drawn: the base config's

    fixed = SearchSpace(fixed=("loss", "lr", "lora_alpha"))
    config = fixed.suggest(optuna.trial.FixedTrial({"epochs_all": 1, "lora_r": 32, "scheduler": "linear"}), base, ["all"])
    assert (config.loss, config.lr, config.phase_epochs, config.lora_r, config.lora_alpha) == (
        base.loss, base.lr, [1], 32, 32)
    assert train_phases(pd.DataFrame({"text1": ["a"]})) == ["all"]
    assert train_phases(pd.DataFrame({"phase": ["hard", "easy"]})) == ["easy", "hard"]


# ---- pruning, errors, joining ------------------------------------------------------------------------

def test_a_pruned_trial_stops_early_and_a_study_without_complete_trials_is_a_user_error(optuna, tiny_model, pairs_dir,
                                                                                         tmp_path):
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    lines: list[str] = []
    # Spearman never reaches 2, so this pruner stops every trial at its first evaluation.
    sweep = Sweep(_base(tiny_model), pairs_dir, storage, "prune", SearchSpace(epochs=(2, 2)),
                  out=tmp_path / "runs", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    sweep.run(1, say=lines.append)
    trial = optuna.load_study(study_name="prune", storage=storage).trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    trained, total = map(int, trial.user_attrs["steps"].split("/"))
    eval_steps = sweep.base.eval_steps
    assert eval_steps == 2 and trained == eval_steps < total  # stopped at its first evaluation
    assert list(trial.intermediate_values) == [eval_steps]
    assert any("pruned at step 2" in line for line in lines)
    assert (tmp_path / "runs" / "prune" / "trial-0000" / "training_log.json").is_file()  # -o keeps the run
    assert "pruned" in _render(sweep.table())
    with pytest.raises(UserError, match=r"has no completed trial \(1 pruned\)"):
        sweep.best()


def _render(table) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_workers_with_other_settings_or_data_cannot_join(optuna, tiny_model, pairs_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'join.db'}"
    Sweep(_base(tiny_model), pairs_dir, storage, "s")
    Sweep(_base(tiny_model), pairs_dir, storage, "s")  # the same setup joins
    with pytest.raises(UserError, match="was started with batch_size = 8, this worker has 16"):
        Sweep(_base(tiny_model, "batch_size=16"), pairs_dir, storage, "s")
    with pytest.raises(UserError, match="was started with epochs = \\[1, 3\\]"):
        Sweep(_base(tiny_model), pairs_dir, storage, "s", SearchSpace(epochs=(1, 2)))
    Sweep(_base(tiny_model, "batch_size=16"), pairs_dir, storage, "other")  # another study name is another study


@pytest.mark.parametrize(("url", "message"), [
    ("notaurl", "is not a database URL; use e.g. sqlite:///sweep.db"),
    ("sqlite:////no/such/folder/sweep.db", "folder /no/such/folder does not exist"),
    ("nosuchdb://host/db", "Can't load plugin"),
    ("postgresql://me:s3cret@localhost:1/db", "the database driver is not installed; pip install 'psycopg[binary]'"),
])
def test_bad_storage_urls_are_one_line_errors_without_the_password(optuna, url, message):
    from sqlalchemy.engine import make_url

    if url.startswith("postgresql") and importlib.util.find_spec(make_url(url).get_dialect().driver):
        message = "cannot open the database"  # the driver is there (the serve extra brings psycopg): nothing listens
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        open_storage(url, attempts=1)
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_cli_errors_are_one_line(optuna, tiny_model, pairs_dir, tmp_path, monkeypatch, capsys):
    args = ["sweep", "--pairs", str(pairs_dir), "--trials", "1", "-m", str(tiny_model)]
    assert main([*args, "--storage", "notaurl"]) == 2
    existing = tmp_path / "best.yaml"
    existing.write_text("lr: 0.1\n")
    assert main([*args, "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--best-config", str(existing)]) == 2
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if optuna were not installed
    assert main([*args, "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "Traceback" not in "".join(err)
    assert "not a database URL" in err[0] and "pass --overwrite" in err[1]
    assert "pip install 'tickettune[sweep]'" in err[2]


# ---- two workers, one study ----------------------------------------------------------------------------

def test_two_workers_share_one_sqlite_study_and_the_best_config_loads(optuna, tiny_model, pairs_dir, tmp_path):
    database = tmp_path / "sweep.db"
    storage = f"sqlite:///{database}"
    sets = [arg for knob in KNOBS for arg in ("--set", knob)]
    scratch = tmp_path / "tmp"  # the workers' temporary folders, to see that trials clean up after themselves
    scratch.mkdir()
    env = {**ONE_THREAD, "TMPDIR": str(scratch)}
    workers = [subprocess.Popen([sys.executable, "-m", "tickettune", "sweep", "--pairs", str(pairs_dir), "--trials", "2",
                                 "--storage", storage, "--study-name", "shared", "-m", str(tiny_model), *sets,
                                 "--max-epochs", "1", "--best-config", str(tmp_path / f"best{i}.yaml")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
               for i in range(2)]
    results = [w.communicate(timeout=300) for w in workers]
    numbers = []
    for worker, (out, err) in zip(workers, results):
        assert worker.returncode == 0, err[-3000:]
        assert "best: trial" in out and "study 'shared'" in out
        numbers += [int(n) for n in re.findall(r"trial (\d+) complete", err)]
    assert sorted(numbers) == [0, 1, 2, 3]  # each worker ran two trials of the one study

    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE and math.isfinite(t.value) for t in study.trials)
    assert all(t.user_attrs["steps"].split("/")[0] == t.user_attrs["steps"].split("/")[1] for t in study.trials)
    assert not list(scratch.glob("tickettune-trial-*"))

    # the worker that wrote its best config last saw every trial: it names a trial with the study's best value
    last = max(range(2), key=lambda i: (tmp_path / f"best{i}.yaml").stat().st_mtime)
    best = study.trials[int(re.search(r"best: trial (\d+)", results[last][0]).group(1))]
    assert best.value == max(t.value for t in study.trials)
    config = resolve_config(config_file=tmp_path / f"best{last}.yaml")
    assert config.lr == pytest.approx(best.params["lr"]) and config.loss == best.params["loss"]
    assert config.lora_r == best.params["lora_r"] and config.scheduler == best.params["scheduler"]
    assert config.phase_epochs == [1, 1, 1] and config.schedule_per_phase == best.params["schedule_per_phase"]
    assert config.batch_size == 8 and config.model_name == str(tiny_model) and config.output_dir is None
    assert Path(config.pairs_dir) == pairs_dir.resolve() and config.eval_steps == 2
