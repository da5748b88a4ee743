"""A training budget in minutes turned into tickets and epochs, from this machine's measured throughput.

The same command should use a sample on 2 CPU cores and every ticket on a GPU. So `train --budget 15m` measures
what a run costs here (the encoder's texts per second on a few of the texts it must encode anyway, and the
head's seconds per ticket and epoch on the vectors) and plans:

1. held-out texts first (eval and test tickets, probes): the run is judged on them whatever it trains on;
2. train tickets whose vectors are cached cost nothing to encode, so they are all used;
3. then as many uncached train tickets as the rest of the budget encodes, with the head's epochs over them;
4. if even the head's epochs over the chosen tickets overrun, fewer epochs (at least MIN_EPOCHS).

`max_train_tickets` still caps the tickets when set. The plan says what it bought and why, for the log and
the report.

    >>> plan = plan_head_budget(budget_seconds=900, train_tickets=30_000, train_cached=0, held_out_uncached=8_000,
    ...                         throughput=Throughput(encode_per_second=20.0, head_seconds_per_ticket_epoch=1e-4),
    ...                         epochs=10)
    >>> plan.train_tickets, plan.epochs        # (900 - 8000 / 20) s / (1 / 20 + 10 x 1e-4) s per ticket
    (9803, 10)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from tickettune.core.errors import UserError

DEFAULT_BUDGET_MINUTES = 15.0
MIN_EPOCHS = 2
MIN_TRAIN_TICKETS = 64
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)


def parse_duration(text: str, option: str = "--budget") -> float:
    """Minutes from '15m', '90s', '1.5h' or a bare number of minutes; a UserError naming the option otherwise."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{option} {text!r} is not a positive duration; write e.g. {option} 15m, 90s or 1h")
    value, unit = float(match.group(1)), (match.group(2) or "m").lower()
    return value / 60 if unit in ("s", "sec") else value * 60 if unit == "h" else value


@dataclass(frozen=True)
class Throughput:
    """What one unit of work costs on this machine, as measured at the start of a run."""

    encode_per_second: float  # texts the frozen encoder embeds per second
    head_seconds_per_ticket_epoch: float  # seconds of head training per ticket and epoch

    def __post_init__(self) -> None:
        if not self.encode_per_second > 0 or self.head_seconds_per_ticket_epoch < 0:  # inf: nothing left to encode
            raise ValueError("throughputs must be positive")


@dataclass(frozen=True)
class BudgetPlan:
    """The planned work: train tickets (of those available), head epochs, and the predicted seconds of each part."""

    budget_seconds: float
    train_tickets: int
    available: int
    epochs: int
    held_out_seconds: float
    encode_seconds: float
    head_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def predicted_seconds(self) -> float:
        return self.held_out_seconds + self.encode_seconds + self.head_seconds

    def describe(self) -> str:
        """One line: what the budget bought."""
        share = "all" if self.train_tickets >= self.available else f"{self.train_tickets:,} of"
        return (f"budget {self.budget_seconds / 60:g} min: {share} {self.available:,} train tickets, {self.epochs} head "
                f"epochs; predicted {self.predicted_seconds / 60:.1f} min (held-out encoding {self.held_out_seconds:.0f} s, "
                f"train encoding {self.encode_seconds:.0f} s, head {self.head_seconds:.0f} s)"
                + (f"; {'; '.join(self.notes)}" if self.notes else ""))


def plan_head_budget(*, budget_seconds: float, train_tickets: int, train_cached: int, held_out_uncached: int,
                     throughput: Throughput, epochs: int, cap: int | None = None) -> BudgetPlan:
    """Plan a head-stage run within `budget_seconds` (steps 1-4 of the module docstring).

    train_tickets: train tickets available; train_cached: how many of them have cached vectors (the planner uses
    cached ones first); held_out_uncached: eval/test/probe texts still to encode; cap: max_train_tickets.
    """
    if budget_seconds <= 0:
        raise UserError(f"budget {budget_seconds / 60:g} min is not positive; give e.g. --budget 15m")
    notes: list[str] = []
    available = min(train_tickets, cap) if cap else train_tickets
    if cap and cap < train_tickets:
        notes.append(f"max_train_tickets caps the tickets at {cap:,}")
    held_out = held_out_uncached / throughput.encode_per_second
    left = budget_seconds - held_out
    cached = min(train_cached, available)
    per_ticket = 1 / throughput.encode_per_second + epochs * throughput.head_seconds_per_ticket_epoch
    head_only = epochs * throughput.head_seconds_per_ticket_epoch
    # Cached tickets cost only head epochs; each uncached one costs its encoding too.
    room = max(left - cached * head_only, 0.0)
    uncached = min(available - cached, int(room // per_ticket) if per_ticket > 0 else available - cached)
    chosen = cached + uncached
    if chosen < min(MIN_TRAIN_TICKETS, available):
        chosen = min(MIN_TRAIN_TICKETS, available)
        uncached = max(chosen - cached, 0)
        notes.append(f"the budget is too small for this machine; training on the minimum of {chosen} tickets anyway")
    if left <= 0:
        notes.append(f"encoding the held-out texts alone takes {held_out / 60:.1f} min")
    planned_epochs = epochs
    head = chosen * epochs * throughput.head_seconds_per_ticket_epoch
    spare = budget_seconds - held_out - uncached / throughput.encode_per_second
    if head > max(spare, 0) and epochs > MIN_EPOCHS:
        fit = int(max(spare, 0) // max(chosen * throughput.head_seconds_per_ticket_epoch, 1e-12))
        planned_epochs = max(MIN_EPOCHS, min(epochs, fit))
        head = chosen * planned_epochs * throughput.head_seconds_per_ticket_epoch
        notes.append(f"head epochs cut from {epochs} to {planned_epochs} to fit")
    return BudgetPlan(budget_seconds, chosen, available, planned_epochs, held_out,
                      uncached / throughput.encode_per_second, head, notes)


def budget_seconds(budget_minutes: float | None) -> float:
    """The budget in seconds, DEFAULT_BUDGET_MINUTES when unset."""
    minutes = DEFAULT_BUDGET_MINUTES if budget_minutes is None else budget_minutes
    if not math.isfinite(minutes) or minutes <= 0:
        raise UserError(f"budget {minutes!r} min is not a positive number of minutes; give e.g. --budget 15m")
    return minutes * 60
