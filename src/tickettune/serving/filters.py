"""Narrow a search to tickets with given field values or opened/updated in a time window, inside the index query.

A filter picks the candidate rows first and the top k is taken among them, so a filtered search still returns
k results when k tickets match (a cut after the top k would leave fewer, or none). Exact search scores only
the candidate rows; the FAISS IVF index searches with an ID selector over them, or, when they are few, they
are scored exactly (a selective filter over a probed IVF could miss candidates outside the probed cells). A
filter most rows pass is an unfiltered search for a few more than k results, the failing ones dropped.

    >>> spec = TicketFilter.parse({"cmdb_ci": "EXCH-01", "opened_after": "2024-03-01"}, columns)  # doctest: +SKIP
    >>> allowed = spec.mask(tickets)                                                           # doctest: +SKIP
    >>> scores, found = filtered_search(index, query_vectors, 10, allowed)                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError

# Ticket fields a search can be narrowed to, when the tickets have them (ServiceNow's incident column names).
FIELDS = ("assignment_group", "cmdb_ci", "category", "subcategory", "state", "priority", "contact_type")
# Time bounds: name -> (column, side). Values are ISO dates or date-times, compared in UTC.
WINDOWS = {"opened_after": ("opened_at", "after"), "opened_before": ("opened_at", "before"),
           "updated_after": ("sys_updated_on", "after"), "updated_before": ("sys_updated_on", "before")}
DATE_COLUMNS = {"opened_at": ("opened_at", "sys_created_on"), "sys_updated_on": ("sys_updated_on", "updated_at")}
# Below this many candidate rows an IVF index scores them exactly: as fast, and no candidate is missed.
EXACT_BELOW = 50_000
# Above this share of passing rows, exact search scores every row and rules out the rest (cheaper than a copy:
# at 100,000 rows scoring all takes 9 ms here, copying and scoring 29% of them 15 ms).
DENSE_ABOVE = 0.1
# At or above this share, a filtered search is an unfiltered one for about 2k/share results, the failures dropped.
OVERFETCH_ABOVE = 0.5
OVERFETCH_EXTRA = 8


def parse_time(value: Any, name: str) -> pd.Timestamp:
    """An ISO date or date-time as a UTC timestamp (a time without zone is read as UTC)."""
    try:
        stamp = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise UserError(f"{name}: '{value}' is not a date; send an ISO date or date-time such as 2024-03-01 or "
                        "2024-03-01T09:30:00Z")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def date_column(tickets: pd.DataFrame, column: str) -> Optional[str]:
    """The tickets' column holding `column` (opened_at or sys_updated_on, under its usual export names)."""
    return next((name for name in DATE_COLUMNS[column] if name in tickets.columns), None)


def ticket_times(tickets: pd.DataFrame, column: str) -> np.ndarray:
    """A date column as UTC datetime64 (NaT where empty or unreadable)."""
    values = pd.to_datetime(tickets[column].replace("", None), errors="coerce", utc=True, format="mixed")
    return values.to_numpy(dtype="datetime64[ns]")


@dataclass
class TicketFilter:
    """Field values (each ticket must have one of the listed values of every field) and time bounds.

    Input: an object such as {"assignment_group": "Network", "cmdb_ci": ["EXCH-01", "EXCH-02"],
    "opened_after": "2024-03-01"}; field names are FIELDS present in the tickets, time bounds are WINDOWS.
    """

    values: dict[str, list[str]] = field(default_factory=dict)
    times: dict[str, pd.Timestamp] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: Optional[Mapping[str, Any]], columns: Sequence[str], where: str = "filters") -> "TicketFilter":
        """Check a filter object against the tickets' columns; a UserError names the first bad entry."""
        result = cls()
        available = [f for f in FIELDS if f in columns]
        for name, value in (spec or {}).items():
            label = f"{where}.{name}"
            if name in WINDOWS:
                column = WINDOWS[name][0]
                if not any(c in columns for c in DATE_COLUMNS[column]):
                    raise UserError(f"{label}: the tickets have no {column} column to filter on; drop this filter")
                result.times[name] = parse_time(value, label)
                continue
            if name not in FIELDS:
                known = ", ".join(available + list(WINDOWS))
                raise UserError(f"{label}: unknown filter field; use one of {known}")
            if name not in columns:
                raise UserError(f"{label}: the tickets have no {name} column; filter on one of "
                                f"{', '.join(available) or 'the time bounds'}")
            values = value if isinstance(value, list) else [value]
            if not values or any(not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip()
                                 for v in values):
                raise UserError(f"{label}: expected a value or a list of values such as \"Network\"")
            result.values[name] = [str(v).strip() for v in values]
        for column in ("opened", "updated"):
            after, before = result.times.get(f"{column}_after"), result.times.get(f"{column}_before")
            if after is not None and before is not None and after >= before:
                raise UserError(f"{where}.{column}_after: {after.isoformat()} is not before {column}_before "
                                f"{before.isoformat()}; swap them")
        return result

    def __bool__(self) -> bool:
        return bool(self.values or self.times)

    def mask(self, tickets: pd.DataFrame, cache: Optional["ColumnCache"] = None) -> np.ndarray:
        """Which tickets pass; `cache` keeps the prepared columns between searches of an unchanged table."""
        cache = cache or ColumnCache()
        keep = np.ones(len(tickets), dtype=bool)
        for name, wanted in self.values.items():
            codes, uniques = cache.values(tickets, name)
            keep &= np.isin(codes, uniques.get_indexer(wanted))  # a value no ticket has is -1: matches nothing
        for name, bound in self.times.items():
            column = date_column(tickets, WINDOWS[name][0])
            if column is None:  # parse() saw the column; these tickets (another table) lack it
                raise UserError(f"{name}: the tickets have no {WINDOWS[name][0]} column to filter on; drop this filter")
            stamps = cache.times(tickets, column)
            limit = np.datetime64(bound.tz_convert(None).to_datetime64(), "ns")
            keep &= (stamps >= limit) if WINDOWS[name][1] == "after" else (stamps < limit)  # NaT compares False
        return keep

    def rows(self, tickets: pd.DataFrame, cache: Optional["ColumnCache"] = None) -> np.ndarray:
        return np.flatnonzero(self.mask(tickets, cache))


class ColumnCache:
    """A ticket table's columns prepared for filtering (values as stripped strings, dates as UTC datetime64),
    each made on first use; `clear()` when the table changes (the service clears it after every added ticket)."""

    def __init__(self):
        self.prepared: dict[tuple[str, str], Any] = {}

    def clear(self) -> None:
        self.prepared.clear()

    def values(self, tickets: pd.DataFrame, column: str) -> tuple[np.ndarray, pd.Index]:
        """The column as integer codes into its distinct (stripped) values: a filter then compares integers."""
        key = ("values", column)
        if key not in self.prepared or len(self.prepared[key][0]) != len(tickets):
            self.prepared[key] = pd.factorize(tickets[column].fillna("").astype(str).str.strip())
        return self.prepared[key]

    def times(self, tickets: pd.DataFrame, column: str) -> np.ndarray:
        key = ("times", column)
        if key not in self.prepared or len(self.prepared[key]) != len(tickets):
            self.prepared[key] = ticket_times(tickets, column)
        return self.prepared[key]


def filtered_search(index, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row numbers of each query's `k` best among the `allowed` rows (a boolean mask over the rows of
    `index`, a search.VectorIndex, or row numbers), best first; places beyond the candidates hold score -inf and
    row -1, as VectorIndex.search pads.

    When most rows pass (OVERFETCH_ABOVE), the index is searched as without a filter for more than k results and
    those that fail are dropped: the cost of an unfiltered search. Should fewer than k of them pass (the failing
    rows crowd the top), the candidates are scored as below, so the answer is still the top k among them.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    mask = np.asarray(allowed)
    if mask.dtype != bool:
        rows = mask.astype(np.int64)
        mask = np.zeros(len(index), dtype=bool)
        mask[rows] = True
    elif len(mask) != len(index):
        raise ValueError(f"expected a mask over {len(index)} rows, got {len(mask)}")
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    passing = int(np.count_nonzero(mask))
    if passing == 0:
        return scores, found
    if passing >= OVERFETCH_ABOVE * len(index) and passing > k:
        # About 2k/share results hold k passing ones even when failures are twice as common near the query.
        depth = min(len(index), int(np.ceil(2 * k * len(index) / passing)) + OVERFETCH_EXTRA)
        got_scores, got_rows = index.search(queries, depth)
        passed = (got_rows >= 0) & mask[np.maximum(got_rows, 0)]
        if passed.sum(axis=1).min() >= k:
            # Stable order of the passing places first: each row keeps the index's best-first order.
            order = np.argsort(~passed, axis=1, kind="stable")[:, :k]
            return (np.take_along_axis(got_scores, order, axis=1).astype(np.float32),
                    np.take_along_axis(got_rows, order, axis=1).astype(np.int64))
    rows = np.flatnonzero(mask)
    if index.backend == "ivf" and len(rows) >= EXACT_BELOW:
        import faiss

        nprobe = min(index.n_probe, index.faiss_index.nlist)
        # faiss's SWIG classes take these as keywords; its type stubs do not list them.
        params = faiss.SearchParametersIVF(sel=faiss.IDSelectorBatch(rows), nprobe=nprobe)  # type: ignore[call-arg]
        got_scores, got_rows = index.faiss_index.search(queries, k, params=params)
        return np.where(got_rows < 0, -np.inf, got_scores).astype(np.float32), got_rows
    if len(rows) > DENSE_ABOVE * len(index):
        # Many rows pass: score them all and rule the others out, rather than copy most of the vectors.
        candidate = queries @ index.vectors.T
        candidate[:, ~mask] = -np.inf
        rows = np.arange(len(index))
    else:
        candidate = queries @ index.vectors[rows].T
    depth = min(k, len(rows))
    top = np.argpartition(-candidate, depth - 1, axis=1)[:, :depth] if depth < len(rows) else \
        np.tile(np.arange(len(rows)), (len(queries), 1))
    top_scores = np.take_along_axis(candidate, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    scores[:, :depth] = np.take_along_axis(top_scores, order, axis=1)
    found[:, :depth] = rows[np.take_along_axis(top, order, axis=1)]
    found[np.isneginf(scores)] = -1  # a ruled-out row is no result
    return scores, found


def filter_options(tickets: pd.DataFrame, limit: int = 200) -> dict[str, list[str]]:
    """The filterable fields the tickets have, each with its most common values (for the page's choices)."""
    out = {}
    for name in FIELDS:
        if name in tickets.columns:
            counts = tickets[name].astype(str).str.strip().replace("", None).dropna().value_counts()
            out[name] = sorted(counts.index[:limit])
    return out


def parse_cli_filters(items: Sequence[str], columns: Sequence[str]) -> TicketFilter:
    """`--filter FIELD=VALUE` options (repeatable; a field given twice keeps either value) as a TicketFilter."""
    spec: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--filter {item!r}: expected FIELD=VALUE, e.g. --filter cmdb_ci=EXCH-01")
        name = name.strip()
        if name in WINDOWS:
            spec[name] = value
        else:
            spec.setdefault(name, []).append(value)
    return TicketFilter.parse(spec, columns, where="--filter")
