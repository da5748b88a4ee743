"""`tickettune estimate`: the same plan as `train`, a few timed steps, a table; nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickettune.cli import main
from tickettune.data.pairs import PairSet, write_pair_dir
from tickettune.training.config import resolve_config
from tickettune.training.dataset import load_pairs
from tickettune.training.estimate import estimate_run, evaluation_count, spread_steps, step_cost, step_tokens
from tickettune.training.run import train
from tickettune.training.schedule import Phase, Plan

TOPICS = ("printer {} jams on floor {}", "vpn {} drops when working from home {}", "password {} reset for user {}")
# Accumulation and eval_steps make the step and evaluation counts non-trivial.
KNOBS = ["batch_size=4", "gradient_accumulation_steps=2", "phase_epochs=[1,2,1]", "eval_steps=3", "max_seq_length=32",
         "save_steps=null", "bootstrap_resamples=100", "threshold_cv_folds=2", "lr=0.001"]


def _pairs(split: str, count: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for i in range(count):
        a, b = rng.integers(len(TOPICS), size=2)
        # Words of varying count, so length grouping has lengths to group.
        filler = " ".join(["extra"] * int(rng.integers(0, 12)))
        rows.append({"text1": TOPICS[a].format(filler, f"{split}{i}a"), "text2": TOPICS[b].format("", f"{split}{i}b"),
                     "label": 0.9 if a == b else float(rng.choice([0.0, 0.2]))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    train_pairs = _pairs("tr", 42, rng)
    train_pairs["phase"] = [("easy", "medium", "hard")[i % 3] for i in range(len(train_pairs))]
    pairset = PairSet(train_pairs, _pairs("ev", 16, rng), _pairs("te", 16, rng))
    return write_pair_dir(pairset, tmp_path_factory.mktemp("estimate") / "pairs")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_estimate_follows_the_plan_train_runs(tiny_model, pairs_dir, tmp_path):
    config = resolve_config(sets=KNOBS, model_name=str(tiny_model))
    estimate = estimate_run(config, load_pairs(pairs_dir), steps=3)
    log = train(config, pairs_dir, tmp_path / "run", show_progress=False).log

    assert [(p.name, p.steps, p.pairs, p.epochs) for p in estimate.phases] == \
        [(p["name"], p["end_step"] - p["start_step"], p["pairs"], p["epochs"]) for p in log["phases"]]
    # 14/28/14 pairs over batches of 4 with 2 micro-batches a step: 2, 2x2, 2 steps
    assert [p.steps for p in estimate.phases] == [2, 4, 2]
    assert estimate.evaluations == len(log["evals"])
    assert len(estimate.step_seconds) == 3 and min(estimate.step_seconds) > 0
    assert all(p.seconds > 0 for p in estimate.phases) and estimate.eval_seconds > 0 and estimate.test_seconds > 0
    assert estimate.total_seconds > sum(p.seconds for p in estimate.phases)


def test_step_tokens_pad_each_column_to_the_batch_and_sum_micro_batches():
    lengths = np.array([5, 10, 3, 8, 2, 7])
    plan = Plan(batches=[[0, 1], [2], [3, 4], [5]], phases=[Phase("all", 0, 2, 1, 6)], accumulation=2)
    # micro-batches: 2 columns x 2 rows x 10, 2 x 1 x 3, 2 x 2 x 8, 2 x 1 x 7; two per step
    assert step_tokens(plan, lengths, ["text1", "text2", "label"]).tolist() == [46.0, 46.0]
    tokens = np.array([50.0, 10.0, 30.0, 20.0, 40.0])
    steps = spread_steps(tokens, 3)
    assert steps[0] == 2 and sorted(tokens[steps[1:]]) == [10.0, 30.0, 50.0]
    # 0.5 s fixed + 0.01 s a token, recovered from three steps
    assert step_cost(np.array([10.0, 30.0, 50.0]), np.array([0.6, 0.8, 1.0])) == pytest.approx((0.5, 0.01))


def test_evaluation_count_counts_a_step_once():
    plan = Plan(batches=[[0]] * 10, phases=[Phase("easy", 0, 4, 1, 4), Phase("hard", 4, 10, 1, 6)])
    assert evaluation_count(plan, None) == 3  # start, two phase ends
    assert evaluation_count(plan, 4) == 4  # start, 4 (also a phase end), 8, 10


def test_cli_prints_the_table_and_writes_nothing(tiny_model, pairs_dir, capsys):
    before = sorted(p.name for p in pairs_dir.iterdir())
    sets = [arg for knob in KNOBS for arg in ("--set", knob)]
    assert main(["estimate", "--pairs", str(pairs_dir), "-m", str(tiny_model), *sets, "--steps", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("easy", "medium", "hard", "evaluations (5 x", "total"):
        assert word in out
    assert sorted(p.name for p in pairs_dir.iterdir()) == before
    assert not list(pairs_dir.parent.glob("*partial*"))


def test_cli_refuses_a_length_beyond_the_models_positions(tiny_model, pairs_dir, capsys):
    assert main(["estimate", "--pairs", str(pairs_dir), "-m", str(tiny_model), "--set", "max_seq_length=512"]) == 2
    err = capsys.readouterr().err
    assert "max_seq_length 512 exceeds the 128 positions" in err and "Traceback" not in err
