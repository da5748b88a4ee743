"""Which pairs go into which training step, and the learning rate at each step.

The whole run (every curriculum phase) is planned up front as one list of batches, so the
Hugging Face Trainer can drive it as a single epoch: phase boundaries fall on known optimizer
steps, one learning-rate schedule spans the run (or restarts at each phase), and resuming
from a checkpoint simply skips the batches already consumed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tickettune.core.errors import UserError

# Length grouping sorts rows by token length inside windows of this many batches: enough to
# form batches of similar length, few enough that a window still mixes the shuffled data.
LENGTH_WINDOW_BATCHES = 50


@dataclass(frozen=True)
class Phase:
    """One curriculum phase of a plan: optimizer steps [start_step, end_step) and what they hold."""

    name: str
    start_step: int
    end_step: int
    epochs: float  # for the "mixed" phase of curriculum: false, the sum over phases
    pairs: int  # pair presentations in this phase (pairs x epochs)

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step


@dataclass
class Plan:
    """The batches of a run in the order the data loader yields them.

    `batches` holds per-process micro-batches: with `world_size` processes each global batch is
    split into `world_size` consecutive chunks, and process r takes every chunk r (the order
    accelerate's batch-sampler sharding hands them out).
    """

    batches: list[list[int]]
    phases: list[Phase]
    world_size: int = 1
    accumulation: int = 1
    dropped: int = 0  # rows left out because every batch already held one of their texts

    @property
    def total_steps(self) -> int:
        return self.phases[-1].end_step if self.phases else 0

    def pairs_from(self, step: int) -> int:
        """Pair presentations from optimizer step `step` (0-based) to the end, over all processes."""
        return sum(len(b) for b in self.batches[step * self.accumulation * self.world_size:])

    def phase_at(self, step: int) -> Phase:
        """The phase that optimizer step `step` (0-based) belongs to."""
        for phase in self.phases:
            if step < phase.end_step:
                return phase
        return self.phases[-1]


class PlannedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields a precomputed plan's micro-batches; pass `PlannedBatchSampler(plan.batches)` as `args.batch_sampler`.

    `batch_size` is None on purpose: accelerate then shards by whole batches of varying size
    instead of expecting every batch to be full.
    """

    batch_size = None
    drop_last = False

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __call__(self, dataset, **kwargs) -> "PlannedBatchSampler":
        """sentence-transformers calls `args.batch_sampler(dataset, batch_size=..., ...)`; the plan already decided."""
        return self

    def __len__(self) -> int:
        return len(self.batches)

    def __repr__(self) -> str:
        return f"PlannedBatchSampler({len(self.batches)} batches)"

    def __iter__(self):
        return iter([list(b) for b in self.batches])

    def set_epoch(self, epoch: int) -> None:
        """The plan already spans the whole run as one epoch."""


def _passes(rows: np.ndarray, epochs: float, rng: np.random.Generator) -> list[np.ndarray]:
    """One shuffle per epoch; a fractional last epoch takes that share of a fresh shuffle."""
    full, share = int(epochs), epochs - int(epochs)
    passes = [rng.permutation(rows) for _ in range(full)]
    if share > 1e-9:
        take = max(1, round(share * len(rows)))
        passes.append(rng.permutation(rows)[:take])
    return passes


def _length_sorted(order: np.ndarray, lengths: np.ndarray, window: int) -> np.ndarray:
    """Sort by length inside consecutive windows of the shuffled order (longest first)."""
    chunks = [order[i:i + window] for i in range(0, len(order), window)]
    return np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks])


def _sizes(n: int, count: int) -> list[int]:
    base, extra = divmod(n, count)
    return [base + 1 if i < extra else base for i in range(count)]


class _Batch:
    """A batch being filled, with the texts it already holds."""

    def __init__(self, texts: Sequence[tuple[str, ...]]) -> None:
        self.rows: list[int] = []
        self.seen: set[str] = set()
        self.texts = texts

    def offer(self, row: int) -> bool:
        """Add the row unless one of its texts is already in the batch."""
        if self.seen.intersection(self.texts[row]):
            return False
        self.rows.append(row)
        self.seen.update(self.texts[row])
        return True


def _fill_without_duplicates(order: np.ndarray, sizes: list[int], texts: Sequence[tuple[str, ...]]
                             ) -> tuple[list[list[int]], int]:
    """Greedy batches in `order` where no text occurs twice in a batch; a row that clashes waits
    for a later batch, and rows still waiting at the end join the smallest batch that takes them
    (one pair over the size at most). Returns the batches and how many rows found no batch."""
    pending: deque[int] = deque()
    stream = iter(order.tolist())
    batches = []
    for size in sizes:
        batch = _Batch(texts)
        for _ in range(len(pending)):
            if len(batch.rows) >= size:
                break
            row = pending.popleft()
            if not batch.offer(row):
                pending.append(row)
        for row in stream:
            if not batch.offer(row):
                pending.append(row)
            if len(batch.rows) >= size:
                break
        batches.append(batch)
    limit = max(sizes) + 1
    left = [row for row in pending
            if not any(len(b.rows) < limit and b.offer(row) for b in sorted(batches, key=lambda b: len(b.rows)))]
    return [b.rows for b in batches], len(left)


def _ensure_min_size(batches: list[list[int]], minimum: int, texts: Sequence[tuple[str, ...]] | None) -> None:
    """Move rows from the largest batches into batches smaller than `minimum` (every process needs a row)."""
    for batch in batches:
        while len(batch) < minimum:
            donor = max(batches, key=len)
            if len(donor) <= minimum:
                raise UserError("too few distinct pairs to give every process a batch; add pairs or use fewer processes")
            seen = set().union(*(texts[r] for r in batch)) if texts is not None and batch else set()
            pick = next((r for r in reversed(donor) if texts is None or not seen.intersection(texts[r])), donor[-1])
            donor.remove(pick)
            batch.append(pick)


def batch_pass(order: np.ndarray, global_batch: int, multiple: int, minimum: int, rng: np.random.Generator,
               lengths: np.ndarray | None = None, texts: Sequence[tuple[str, ...]] | None = None
               ) -> tuple[list[list[int]], int]:
    """Cut one shuffled pass into global batches.

    The pass becomes ceil(n / global_batch) batches, rounded up to a multiple of `multiple`
    (gradient accumulation), of near-equal size, so no pass ends in a tiny remainder batch and
    phase boundaries fall on optimizer steps. With `lengths`, batches hold texts of similar token
    length (less padding); their order is shuffled again. With `texts`, no text repeats in a batch.
    """
    n = len(order)
    count = math.ceil(math.ceil(n / global_batch) / multiple) * multiple
    if n < count * minimum:
        raise UserError(f"a phase has only {n} pairs, fewer than the {count * minimum} needed for "
                        f"{count} batches across processes and gradient accumulation; add pairs or lower "
                        "gradient_accumulation_steps")
    if lengths is not None:
        order = _length_sorted(order, lengths, LENGTH_WINDOW_BATCHES * global_batch)
    sizes = _sizes(n, count)
    if texts is None:
        bounds = np.cumsum([0] + sizes)
        batches, dropped = [order[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])], 0
    else:
        batches, dropped = _fill_without_duplicates(order, sizes, texts)
    _ensure_min_size(batches, minimum, texts)
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches, dropped


def plan_batches(phase_rows: dict[str, np.ndarray], phase_epochs: dict[str, float], batch_size: int,
                 seed: int, *, curriculum: bool = True, world_size: int = 1, accumulation: int = 1,
                 lengths: np.ndarray | None = None, texts: Sequence[tuple[str, ...]] | None = None) -> Plan:
    """Plan a whole run.

    phase_rows: dataset row indices of each phase, in curriculum order.
    phase_epochs: epochs of each phase (fractions allowed).
    batch_size: pairs per process and micro-batch; a global batch holds batch_size x world_size.
    curriculum: False mixes every phase's presentations into one shuffled phase named "mixed".
    lengths: token length of each dataset row, to group similar lengths (None: plain shuffle).
    texts: the texts of each dataset row, for losses with in-batch negatives (no text twice in a batch).
    """
    if not phase_rows:
        raise UserError("no training pairs; pass a train set with at least one pair")
    rng = np.random.default_rng(seed)
    units: list[tuple[str, float, list[np.ndarray]]] = [
        (name, phase_epochs[name], _passes(np.asarray(rows), phase_epochs[name], rng))
        for name, rows in phase_rows.items() if phase_epochs[name] > 0
    ]
    if not curriculum:
        pool = np.concatenate([p for _, _, passes in units for p in passes])
        units = [("mixed", sum(e for _, e, _ in units), [rng.permutation(pool)])]
    global_batch = batch_size * world_size
    plan = Plan(batches=[], phases=[], world_size=world_size, accumulation=accumulation)
    per_process: list[np.ndarray] = []
    step = 0
    for name, epochs, passes in units:
        count = 0
        for order in passes:
            batches, dropped = batch_pass(order, global_batch, accumulation, world_size, rng, lengths, texts)
            plan.dropped += dropped
            for batch in batches:
                per_process.extend(np.array_split(np.asarray(batch), world_size))
            count += len(batches)
        steps = count // accumulation
        plan.phases.append(Phase(name, step, step + steps, epochs, sum(len(p) for p in passes)))
        step += steps
    plan.batches = [b.tolist() for b in per_process]
    return plan


def warmup_steps(total: int, steps: int, ratio: float | None) -> int:
    """Warmup length of a schedule spanning `total` steps: ceil(ratio x total) when a ratio is set."""
    return math.ceil(ratio * total) if ratio is not None else steps


# Our scheduler names (config.SCHEDULERS) as transformers' get_scheduler knows them.
HF_SCHEDULER_NAMES = {"constant_with_warmup": "constant_with_warmup", "linear": "linear", "warmup_cosine": "cosine"}


def plan_scheduler(optimizer, plan: Plan, scheduler: str, warmup: int, warmup_ratio: float | None, per_phase: bool):
    """The learning-rate schedule of a planned run: transformers' get_scheduler over all its steps, or one per phase
    chained by torch's SequentialLR, so that each phase restarts its warmup and decay (as repeated fit() calls did)."""
    from transformers import get_scheduler

    def over(steps: int):
        return get_scheduler(HF_SCHEDULER_NAMES[scheduler], optimizer, num_warmup_steps=warmup_steps(steps, warmup, warmup_ratio),
                             num_training_steps=steps)

    phases = [phase for phase in plan.phases if phase.steps > 0]
    if not per_phase or len(phases) < 2:
        return over(plan.total_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [over(phase.steps) for phase in phases],
                                                 milestones=[phase.start_step for phase in phases[1:]])
