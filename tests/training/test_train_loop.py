"""`train` writes the calibrated tiers into the model folder and learns from `--feedback` (encoder stage: as pairs;
head stage, the default recipe: as a pair term of the head's loss); `evaluate --calibrate` fits them on a ticket
file. Tiny model, a few steps: what is checked is what the run writes and says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickettune.cli import main
from tickettune.data.pairs import PairOptions, build_pairs, write_pair_dir
from tickettune.data.sample import generate_sample
from tickettune.data.tickets import read_tickets
from tickettune.evaluation.calibration import Calibration

pytestmark = pytest.mark.usefixtures("one_thread")
KNOBS = ["loss=cosine", "batch_size=8", "max_seq_length=32", "lr=0.001", "phase_epochs=[0.5,0.5,0.5]",
         "eval_tickets=60", "retrieval_queries=40", "bootstrap_resamples=100", "threshold_cv_folds=3",
         "save_steps=null", "duplicate_precision=0.8", "related_precision=0.5"]


@pytest.fixture(scope="module")
def sample_pairs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loop-train")
    generate_sample(500, 0).to_csv(folder / "sample.csv", index=False)
    pairset = build_pairs(read_tickets(folder / "sample.csv", group_by="problem_id"),
                          PairOptions(difficulty="tfidf", pairs_per_phase=40, eval_pairs=40, test_pairs=60))
    return write_pair_dir(pairset, folder / "pairs")


def simulated_feedback(path: Path, queries: int = 30) -> Path:
    """Agents' verdicts on new tickets (another sample seed): each query's same-problem suggestion confirmed, an
    other-problem one rejected."""
    tickets = read_tickets_frame(generate_sample(300, 7))
    lines = []
    grouped = [frame for _, frame in tickets.frame.groupby("group") if len(frame) >= 2]
    for i in range(queries):
        own, other = grouped[i % len(grouped)], grouped[(i + 1) % len(grouped)]
        query = own.iloc[(i // len(grouped)) % (len(own) - 1)]
        lines.append({"text1": query["text"], "text2": own.iloc[-1]["text"], "label": 1.0})
        lines.append({"text1": query["text"], "text2": other.iloc[0]["text"], "label": 0.0})
    unique = {json.dumps(line) for line in lines}
    path.write_text("".join(line + "\n" for line in sorted(unique)))
    return path


def read_tickets_frame(frame):
    import tempfile

    folder = Path(tempfile.mkdtemp())
    frame.to_csv(folder / "s.csv", index=False)
    return read_tickets(folder / "s.csv", group_by="problem_id")


def test_train_writes_tiers_and_reports_feedback(tiny_model, sample_pairs, tmp_path, capsys):
    out = tmp_path / "run"
    feedback = simulated_feedback(tmp_path / "feedback.jsonl")
    sets = [x for knob in KNOBS for x in ("--set", knob)]
    # Feedback trains as labelled pairs: a pair recipe (the default head recipe refuses --feedback in one line).
    assert main(["train", "--pairs", str(sample_pairs), "--preset", "recommended-pairs", "--model", str(tiny_model),
                 "--feedback", str(feedback), *sets, "-o", str(out)]) == 0
    printed = capsys.readouterr().err
    assert "feedback: " in printed and "held out" in printed and "calibrated duplicate: " in printed
    calibration = Calibration.load(out / "model")
    assert calibration.targets == {"duplicate": 0.8, "related": 0.5}
    assert calibration.source == "fitted on the eval tickets, measured on the test tickets"
    assert calibration.measured["related"]["results"] >= calibration.measured["duplicate"]["results"]
    report = (out / "report.md").read_text()
    assert "**calibrated tiers**: duplicate:" in report and "figures/calibration.png" in report
    assert "**feedback**: " in report and "held-out verdicts: rejected suggestions' mean score" in report
    assert "## Held-out agent feedback (train --feedback)" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feedback"]["model"]["n_pairs"] > 0


def test_the_default_head_recipe_learns_from_feedback(tiny_model, sample_pairs, tmp_path, capsys):
    feedback = simulated_feedback(tmp_path / "feedback.jsonl")
    knobs = ["head_epochs=3", "max_seq_length=32", "eval_tickets=60", "retrieval_queries=40",
             "bootstrap_resamples=100", "threshold_cv_folds=3", f"vector_cache={tmp_path / 'vectors'}"]
    out = tmp_path / "run"
    assert main(["train", "--pairs", str(sample_pairs), "--model", str(tiny_model), "--feedback", str(feedback),
                 *[x for knob in knobs for x in ("--set", knob)], "-o", str(out)]) == 0
    printed = capsys.readouterr().err
    assert "trained on as the head's pair term" in printed and "agents' verdicts (rejected suggestions pushed" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feedback"]["model"]["n_pairs"] > 0
    report = (out / "report.md").read_text()
    assert "held-out verdicts: rejected suggestions' mean score" in report
    # The verdicts trained on are training texts (evaluating on them is refused as leakage).
    from tickettune.config import resolve_config
    from tickettune.feedback_training import read_feedback, split_feedback
    from tickettune.leakage import fingerprint, read_training_texts

    trained_on, _ = split_feedback(read_feedback(feedback), resolve_config("recommended").seed)
    fingerprints = read_training_texts(out / "model")
    assert all(fingerprint(t) in fingerprints for t in [*trained_on["text1"], *trained_on["text2"]])


def test_evaluate_calibrates_a_model_folder(tiny_model, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    generate_sample(200, 3).to_csv(tmp_path / "incidents.csv", index=False)
    args = ["evaluate", "--model", str(model), "--tickets", str(tmp_path / "incidents.csv"), "--group-by",
            "assignment_group", "--queries", "60", "--resamples", "100", "--allow-leakage"]
    assert main([*args, "--calibrate", "--duplicate-precision", "0.7"]) == 0
    printed = "".join(capsys.readouterr().out.split())  # rich wraps long paths
    assert f"calibrationwrittento{model / 'calibration.json'}" in printed
    calibration = Calibration.load(model)
    assert calibration.targets["duplicate"] == 0.7 and "half the groups" in calibration.source
    # A tiny random model on 200 tickets may not back a tier at all (the curve is a lower bound); the line says which.
    assert ("duplicate:noscorereachesprecision0.70" if calibration.thresholds["duplicate"] is None else
            f"duplicate:score>={calibration.thresholds['duplicate']:.3f}") in printed
    for argv, message in [(["--calibrate", "--related-precision", "0.95"], "is below related_precision"),
                          (["--model", "all-MiniLM-L6-v2", "--calibrate"], "--calibrate fits the tiers on --tickets")]:
        assert main([*args, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
