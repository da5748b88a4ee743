"""How long `tickettune train` would take on this machine, measured rather than guessed.

`estimate_run(config, pairs)` builds the plan `train` would (the same phases, epochs, loss columns,
LoRA adapter and batches, from run.py's own functions), runs one warm-up optimizer step and K
timed ones with the real model and loss on batches of that plan, and times one pass over the eval
pairs. A step costs a fixed part (optimizer, data loading, per-operation overhead) plus a part that
grows with the padded tokens of its batch, and length-grouped batches range from a few tokens to
max_seq_length; so the timed steps are spread over the plan's range of padded tokens, both parts are
fitted to them, and each phase is estimated from its own steps and token count. Nothing is written.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import transformers
from rich.table import Table
from scipy.optimize import nnls
from transformers import TrainerCallback

from tickettune.core.errors import UserError
from tickettune.evaluation.judge import texts_of
from tickettune.training.config import TrainConfig
from tickettune.training.dataset import TrainingData
from tickettune.training.lora import add_lora
from tickettune.training.run import build_trainer, prepare_run, row_lengths
from tickettune.training.schedule import Phase, Plan
from tickettune.training.trainer import training_arguments


@dataclass(frozen=True)
class PhaseEstimate:
    """One curriculum phase of the plan and its estimated training seconds."""

    name: str
    epochs: float
    pairs: int
    steps: int
    seconds: float


@dataclass(frozen=True)
class RunEstimate:
    """What `estimate_run` measured and what it predicts for the whole `train` run."""

    phases: list[PhaseEstimate]
    evaluations: int  # eval passes train() makes: the untuned model, every eval_steps and each phase end
    eval_seconds: float  # one pass over the eval pairs
    test_seconds: float  # scoring the test pairs with the tuned and the untuned model at the end
    step_seconds: list[float]  # the timed optimizer steps

    @property
    def total_seconds(self) -> float:
        return sum(p.seconds for p in self.phases) + self.evaluations * self.eval_seconds + self.test_seconds


class StepTimer(TrainerCallback):
    """Clock time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def step_tokens(plan: Plan, lengths: np.ndarray, columns: list[str]) -> np.ndarray:
    """Padded tokens of each optimizer step of a one-process plan, from each row's token length:
    every text column of a micro-batch padded to its longest row."""
    texts = sum(c != "label" for c in columns)
    per_batch = np.array([texts * len(b) * lengths[b].max() for b in plan.batches], dtype=float)
    return np.add.reduceat(per_batch, np.arange(0, len(per_batch), plan.accumulation))


def spread_steps(tokens: np.ndarray, count: int) -> list[int]:
    """A warm-up step (the median by tokens), then `count` steps spread evenly over the range of padded tokens."""
    order = np.argsort(tokens, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, count).round().astype(int)]
    return [int(order[len(order) // 2])] + [int(s) for s in picks]


def step_cost(tokens: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Seconds per step as fixed + per-padded-token cost, both >= 0, least squares over the timed steps."""
    scale = tokens.mean()
    (fixed, per_token), _ = nnls(np.column_stack([np.ones_like(tokens), tokens / scale]), seconds)
    return float(fixed), float(per_token / scale)


def evaluation_count(plan: Plan, eval_steps: int | None) -> int:
    """Eval passes of a train() run: step 0 (the untuned model), then every eval_steps and each phase end, once a step."""
    regular = set(range(eval_steps, plan.total_steps + 1, eval_steps)) if eval_steps else set()
    return 1 + len(regular | {p.end_step for p in plan.phases})


def time_steps(config: TrainConfig, model, frame, columns: list[str], plan: Plan, steps: list[int]) -> np.ndarray:
    """Seconds of each optimizer step after the first, training on the plan's `steps` in that order."""
    micro = [plan.batches[s * plan.accumulation + i] for s in steps for i in range(plan.accumulation)]
    quiet = config.model_copy(update={"eval_steps": None, "save_steps": None, "report_to": "none"})
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        timed = Plan(micro, [Phase("timed", 0, len(steps), 1, len(micro))], accumulation=plan.accumulation)
        args = training_arguments(quiet, timed, Path(tmp), eval_on_start=False)
        build_trainer(quiet, model, frame, columns, timed, args, callbacks=[timer]).train()
    return np.diff(timer.ends)


def estimate_run(config: TrainConfig, pairs: TrainingData, steps: int = 5, phases: str = "keep") -> RunEstimate:
    """Estimate a `train(config, pairs, phases=phases)` run on this machine from `steps` timed optimizer steps."""
    if steps < 1:
        raise UserError(f"--steps {steps} is too few; time at least 1 step (5 gives a steadier estimate)")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    run = prepare_run(config, pairs, phases)
    model, evaluator, frame, columns, plan = run.model, run.evaluator, run.frame, run.columns, run.plan
    transformers.set_seed(config.seed)
    if config.use_lora:
        add_lora(model, config)

    tokens = step_tokens(plan, row_lengths(model, frame, columns, config.max_seq_length), columns)
    chosen = spread_steps(tokens, steps)
    seconds = time_steps(config, model, frame, columns, plan, chosen)
    fixed, per_token = step_cost(tokens[chosen[1:]], seconds)
    estimates = [PhaseEstimate(p.name, p.epochs, p.pairs, p.steps,
                               fixed * p.steps + per_token * float(tokens[p.start_step:p.end_step].sum()))
                 for p in plan.phases]

    evaluator(model)
    # Evaluation encodes each distinct text of the set once (evaluate.texts_of).
    per_text = evaluator.seconds / len(set(texts_of([evaluator.pairs], evaluator.tickets)))
    sets = pairs.test_sets()
    test_texts = len(set(sets.texts()))
    return RunEstimate(estimates, evaluation_count(plan, config.eval_steps), evaluator.seconds,
                       2 * per_text * test_texts, [float(s) for s in seconds])


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f}" if seconds >= 60 else f"{seconds / 60:.2f}"


def estimate_table(estimate: RunEstimate, title: str) -> Table:
    """The training-time table: steps, pairs and estimated minutes per phase, then evaluations and the total."""
    table = Table(title=title)
    for name in ("Phase", "Epochs", "Pairs", "Steps", "Est. minutes"):
        table.add_column(name, justify="left" if name == "Phase" else "right")
    for p in estimate.phases:
        table.add_row(p.name, f"{p.epochs:g}", f"{p.pairs:,}", f"{p.steps:,}", _minutes(p.seconds))
    table.add_section()
    table.add_row(f"evaluations ({estimate.evaluations} x {estimate.eval_seconds:.1f} s)", "", "", "",
                  _minutes(estimate.evaluations * estimate.eval_seconds))
    table.add_row("test scoring (tuned + untuned)", "", "", "", _minutes(estimate.test_seconds))
    table.add_section()
    table.add_row("total", "", f"{sum(p.pairs for p in estimate.phases):,}",
                  f"{sum(p.steps for p in estimate.phases):,}", _minutes(estimate.total_seconds), style="bold")
    timed = np.array(estimate.step_seconds)
    table.caption = (f"from {len(timed)} timed optimizer steps ({timed.min():.2f}-{timed.max():.2f} s, spread over the "
                     "plan's batch lengths) after 1 warm-up step; model loading and writing OUT not included")
    return table
