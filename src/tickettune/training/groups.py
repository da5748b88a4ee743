"""Batches of labelled tickets for losses that learn from every ticket and its group, not from pairs.

A pair file holds a few thousand pairs; the ticket export it came from holds tens of thousands of labelled
tickets, and an in-batch loss compares every ticket of a batch with every other. Two batch shapes:

- P x K (the batch_*_triplet losses): `groups_per_batch` groups, batch_size / P tickets of each, as rows
  (text, label = group code). The loss takes every same-group pair as a positive and every other pair as a
  negative, so the labels are used exactly and nothing has to be mined into pairs first.
- one ticket pair per group (group_mnrl, group_gist): rows (anchor, positive) of one group each, and no two
  rows of the same group in a batch. MNRL treats every other row as a negative: with two rows of one group
  in a batch it would push tickets of the same problem apart, fighting the labels.

The curriculum stays meaningful. Easy batches draw groups and tickets at random. Hard batches come from one
neighbourhood of the untuned model's embedding space: a random seed ticket, its nearest tickets, and their
groups, so a batch holds tickets the untuned model finds alike but the labels call different (and same-group
tickets it finds far apart). Medium batches alternate the two. Everything is planned up front, like the
pair curriculum (schedule.py), and handed to the trainer as rows in batch order.

This planner is our own: sentence-transformers' GroupByLabelBatchSampler draws P x K batches at random but
knows no neighbourhoods, no one-per-group batches and no phases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.training.schedule import Phase, Plan

NEIGHBOURHOOD = 4  # a hard batch is drawn from the seed ticket's nearest NEIGHBOURHOOD x batch_size tickets
HARD_SHARE = {"easy": 0.0, "medium": 0.5, "hard": 1.0, "all": 0.0}


@dataclass
class GroupPool:
    """The train tickets as the planner needs them: text, group code, members of each group that has two or more.

    `vectors` (unit-length rows from the untuned model) are needed only for hard batches.
    """

    text: np.ndarray
    code: np.ndarray
    vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        sizes = np.bincount(self.code)
        self.eligible = np.flatnonzero(sizes >= 2)
        self.members = {int(g): np.flatnonzero(self.code == g) for g in self.eligible}
        if len(self.eligible) < 2:
            raise UserError(f"group training needs two or more groups with at least two tickets each; the train tickets "
                            f"have {len(self.eligible)} ({len(self.code)} tickets in {len(sizes)} groups); group by a "
                            "coarser field or use a pair loss such as cosine")

    @classmethod
    def from_tickets(cls, tickets: pd.DataFrame, limit: int | None, seed: int) -> "GroupPool":
        """From a ticket table (text, group), a seeded sample of `limit` tickets when given."""
        if limit is not None and limit < len(tickets):
            tickets = tickets.iloc[np.sort(np.random.default_rng(seed).choice(len(tickets), limit, replace=False))]
        return cls(tickets["text"].astype(str).to_numpy(), pd.factorize(tickets["group"].astype(str))[0])

    def __len__(self) -> int:
        return len(self.text)


def _draw(members: np.ndarray, count: int, rng: np.random.Generator, first: np.ndarray | None = None) -> np.ndarray:
    """`count` distinct members (repeats only when the group is smaller), those in `first` preferred."""
    if first is not None and len(first):
        rest = np.setdiff1d(members, first)
        order = np.concatenate([rng.permutation(first), rng.permutation(rest)])
    else:
        order = rng.permutation(members)
    return order[:count] if count <= len(order) else np.resize(order, count)


def _neighbourhood(pool: GroupPool, size: int, rng: np.random.Generator) -> np.ndarray:
    """The `size` tickets nearest a random seed ticket by the untuned model (the seed included)."""
    if pool.vectors is None:
        raise ValueError("hard batches need the pool's vectors (GroupPool.vectors) from the untuned model")
    seed = rng.integers(len(pool))
    similarity = pool.vectors @ pool.vectors[seed]
    size = min(size, len(pool))
    return np.argpartition(-similarity, size - 1)[:size]


def _groups_in(pool: GroupPool, around: np.ndarray | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct eligible groups: the most frequent around a neighbourhood first, else at random."""
    if around is None:
        return rng.choice(pool.eligible, count, replace=False)
    found = pd.Series(pool.code[around]).value_counts()
    near = [g for g in found.index if g in pool.members][:count]
    others = rng.permutation(np.setdiff1d(pool.eligible, near))
    return np.concatenate([np.asarray(near, dtype=np.int64), others[:count - len(near)]])


def pk_batch(pool: GroupPool, groups: int, size: int, rng: np.random.Generator, hard: bool) -> list[int]:
    """Ticket rows of one P x K batch: `groups` groups, `size` tickets as evenly spread as they divide."""
    groups = min(groups, len(pool.eligible))
    around = _neighbourhood(pool, NEIGHBOURHOOD * size, rng) if hard else None
    chosen = _groups_in(pool, around, groups, rng)
    counts = np.full(groups, size // groups) + (np.arange(groups) < size % groups)
    rows = [_draw(pool.members[int(g)], int(k), rng, None if around is None else around[pool.code[around] == g])
            for g, k in zip(chosen, counts)]
    return np.concatenate(rows).tolist()


def pair_batch(pool: GroupPool, size: int, rng: np.random.Generator, hard: bool) -> list[tuple[int, int]]:
    """(anchor, positive) ticket rows, one pair per group and no group twice: in-batch negatives are all other groups."""
    size = min(size, len(pool.eligible))
    around = _neighbourhood(pool, NEIGHBOURHOOD * size, rng) if hard else None
    pairs = []
    for g in _groups_in(pool, around, size, rng):
        near = None if around is None else around[pool.code[around] == g]
        anchor = int(_draw(pool.members[int(g)], 1, rng, near)[0])
        others = pool.members[int(g)][pool.members[int(g)] != anchor]
        pairs.append((anchor, int(rng.choice(others))))
    return pairs


def plan_group_batches(pool: GroupPool, phase_epochs: dict[str, float], *, batch_size: int, groups_per_batch: int,
                       one_per_group: bool, seed: int, curriculum: bool = True, world_size: int = 1,
                       accumulation: int = 1) -> tuple[pd.DataFrame, Plan]:
    """Plan a whole run of group batches; returns the rows in batch order and the Plan over them.

    One epoch of a phase is len(pool) / batch_size optimizer steps (each ticket seen about once). Each
    optimizer step takes world_size x accumulation micro-batches, each a whole batch of its own shape.
    Columns: (text, label) for P x K batches, (anchor, positive) with `one_per_group`; then `phase`.
    """
    if (pool.vectors is None) and any(HARD_SHARE.get(p, 0) > 0 and e > 0 for p, e in phase_epochs.items()):
        raise ValueError("hard batches need the untuned model's vectors of the pool")
    rng = np.random.default_rng(seed)
    per_step = world_size * accumulation
    units = []
    for name, epochs in phase_epochs.items():
        if epochs <= 0:
            continue
        steps = max(1, math.ceil(epochs * len(pool) / (batch_size * world_size * accumulation)))
        kinds = [HARD_SHARE[name] >= 1 or (HARD_SHARE[name] > 0 and i % 2 == 1) for i in range(steps * per_step)]
        units.append((name, epochs, kinds))
    if not curriculum:
        kinds = [k for _, _, ks in units for k in ks]
        units = [("mixed", sum(e for _, e, _ in units), [kinds[i] for i in rng.permutation(len(kinds))])]
    columns: dict[str, list] = {"anchor": [], "positive": []} if one_per_group else {"text": [], "label": []}
    plan = Plan(batches=[], phases=[], world_size=world_size, accumulation=accumulation)
    step = 0
    for name, epochs, kinds in units:
        start_row = len(next(iter(columns.values())))
        for hard in kinds:
            first = len(next(iter(columns.values())))
            if one_per_group:
                for anchor, positive in pair_batch(pool, batch_size, rng, hard):
                    columns["anchor"].append(pool.text[anchor])
                    columns["positive"].append(pool.text[positive])
            else:
                rows = pk_batch(pool, groups_per_batch, batch_size, rng, hard)
                columns["text"].extend(pool.text[rows].tolist())
                columns["label"].extend(pool.code[rows].tolist())
            plan.batches.append(list(range(first, len(next(iter(columns.values()))))))
        steps = len(kinds) // per_step
        n_rows = len(next(iter(columns.values()))) - start_row
        columns.setdefault("phase", []).extend([name] * n_rows)
        plan.phases.append(Phase(name, step, step + steps, epochs, n_rows))
        step += steps
    return pd.DataFrame(columns), plan
