"""Find the tickets most similar to a new one: read a ticket file, build or load its index (`index.py`), rank.

The tickets are a pandas DataFrame with a `text` column and, optionally, a `number` column
(any other columns ride along into the results).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.models import model_threshold
from tickettune.data.tickets import TicketTable
from tickettune.evaluation.calibration import Calibration
from tickettune.serving.index import IndexCache


def check_tickets(tickets: pd.DataFrame) -> pd.DataFrame:
    """Tickets with a non-empty `text` column (strings) and a string `number` column when one exists."""
    if not isinstance(tickets, pd.DataFrame) or "text" not in tickets.columns:
        raise UserError("tickets: expected a table with a 'text' column; choose the text column with --text-column")
    if tickets.empty:
        raise UserError("tickets: the table holds no tickets; pass a file with at least one ticket")
    tickets = tickets.reset_index(drop=True).copy()
    tickets["text"] = tickets["text"].fillna("").astype(str)
    if "number" in tickets.columns:
        tickets["number"] = tickets["number"].fillna("").astype(str).str.strip()
    return tickets


def read_ticket_file(path: Path, text_column: Optional[str] = None) -> TicketTable:
    """Tickets of any export `tickets.read_table` reads, with `text` made as for training; no group is needed.

    Rows without text are left out (they cannot be similar to anything); the table's `notes` say how many.
    """
    from tickettune.data.tickets import build_text, read_table, text_columns_of

    raw = read_table(path)
    columns = text_columns_of(raw, [text_column] if text_column else None)
    text = pd.Series([build_text(parts) for parts in zip(*(raw.frame[c] for c in columns))], index=raw.frame.index,
                     dtype=object)
    frame = raw.frame.drop(columns=["text"], errors="ignore").assign(text=text)
    empty = frame["text"] == ""
    frame = frame[~empty].reset_index(drop=True)
    if frame.empty:
        raise UserError(f"{path}: no ticket has text in {', '.join(columns)}; choose the text with --text-column")
    notes = [f"{path}: left out {int(empty.sum())} tickets without text"] if empty.any() else []
    return TicketTable(frame, source=str(path), text_columns=columns, rows_read=len(raw.frame), notes=notes,
                       headers=raw.headers)


@dataclass
class SearchResult:
    """The top-k tickets (a DataFrame: rank, score, above_threshold, then the tickets' own columns)."""

    hits: pd.DataFrame
    threshold: Optional[float]
    cached: bool
    backend: str
    n_tickets: int
    tiers: Optional[dict] = None  # the calibrated tiers' thresholds; hits then have `tier` and `precision`
    n_matching: Optional[int] = None  # tickets passing the filters, when there were filters


def similar_tickets(tickets: pd.DataFrame, model: str, *, query: Optional[str] = None, ticket: Optional[str] = None,
                    k: int = 10, threshold: Optional[float] = None, cache_dir: Optional[Path] = None,
                    backend: str = "auto", model_backend: str = "auto", onnx_file: Optional[str] = None,
                    filters=None) -> SearchResult:
    """The `k` tickets most similar to a query text, or to the ticket with number `ticket` (itself excluded),
    among the tickets passing `filters` (a filters.TicketFilter) when given.

    With a calibration in the model folder (calibration.py) each hit has its `tier` and calibrated `precision`,
    and the default threshold is the duplicate tier's.

    The model (a folder or a name `resolve_model` knows) is loaded only when it must encode
    something: a cached index searched for a known ticket needs no model at all. `backend` is the
    index's (`choose_backend`); `model_backend` and `onnx_file` choose the encoder (`encoders.EncoderChoice`).
    """
    from tickettune.serving.encoders import Encoder

    if (query is None) == (ticket is None):
        raise UserError("give exactly one of --query TEXT or --ticket NUMBER")
    if k < 1:
        raise UserError(f"-k is {k}; expected at least 1")
    tickets = check_tickets(tickets)
    encoder = Encoder.of(model, backend=model_backend, onnx_file=onnx_file)
    cache = IndexCache(cache_dir)
    index, cached = cache.load_or_build(encoder.folder, list(tickets["text"]), encoder, backend)
    excluded = np.zeros(len(tickets), dtype=bool)
    if ticket is not None:
        if "number" not in tickets.columns:
            raise UserError("tickets: there is no ticket number column to look --ticket up in; use --query TEXT")
        excluded = (tickets["number"] == str(ticket).strip()).to_numpy()
        if not excluded.any():
            raise UserError(f"tickets: no ticket numbered '{ticket}'; check the number or use --query TEXT")
        vector = index.vectors[int(np.flatnonzero(excluded)[0])]
    else:
        if cached:
            encoder.check_agrees(index.probe, str(cache.cache_dir))
        vector = encoder.encode([query or ""])[0]
    matching = None
    if filters:
        from tickettune.serving.filters import filtered_search

        allowed = filters.mask(tickets) & ~excluded
        matching = int(np.count_nonzero(allowed))
        scores, rows = filtered_search(index, vector, k, allowed)
    else:
        scores, rows = index.search(vector, k + int(excluded.sum()))
    keep = (rows[0] >= 0) & ~excluded[np.maximum(rows[0], 0)]
    scores, rows = scores[0][keep][:k], rows[0][keep][:k]
    calibration = Calibration.load(encoder.folder)
    if threshold is None:
        threshold = calibration.thresholds.get("duplicate") if calibration else model_threshold(model)
    ranked = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "score": scores.astype(float),
                           "above_threshold": scores >= threshold if threshold is not None else pd.NA})
    if calibration is not None:
        ranked["tier"] = [calibration.tier(float(s)) for s in scores]
        ranked["precision"] = calibration.precision(scores)
    own = tickets.iloc[rows].drop(columns=list(ranked.columns), errors="ignore").reset_index(drop=True)
    hits = pd.concat([ranked, own], axis=1)
    return SearchResult(hits=hits, threshold=threshold, cached=cached, backend=index.backend, n_tickets=len(tickets),
                        tiers=dict(calibration.thresholds) if calibration else None, n_matching=matching)


def hits_table(result: SearchResult, show: Sequence[str] = (), text_width: int = 100):
    """The hits as a rich Table: rank, score, a mark when at or above the threshold, number, `show` columns, text.

    `show` names columns of the hits (canonical names, as `tickets.resolve_column` gives them).
    """
    from rich.table import Table
    from rich.text import Text

    where = "cached" if result.cached else "built"
    limit = "no threshold known" if result.threshold is None else f"threshold {result.threshold:.3f}"
    among = "" if result.n_matching is None else f" ({result.n_matching} passing the filters)"
    table = Table(title=f"{len(result.hits)} most similar of {result.n_tickets} tickets{among} "
                        f"(index {where}, {result.backend}; {limit})")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    if result.tiers is not None:
        table.add_column("tier")
        table.add_column("precision", justify="right")
    if result.threshold is not None:
        table.add_column("similar", justify="center")
    columns = (["number"] if "number" in result.hits.columns else []) + list(show) + ["text"]
    for column in columns:
        table.add_column(column, overflow="fold" if column == "text" else "ellipsis")
    for values in result.hits.to_dict("records"):
        text = " ".join(str(values["text"]).split())
        text = text if len(text) <= text_width else text[:text_width - 1] + "…"
        mark = [] if result.threshold is None else ["[green]yes[/green]" if values["above_threshold"] else "no"]
        # Ticket fields are shown as plain text: a "[...]" in them is not rich markup.
        cells = [Text(str(values[c])) for c in columns[:-1]] + [Text(text)]
        tier = [] if result.tiers is None else [values["tier"], f"{values['precision']:.2f}"]
        table.add_row(str(values["rank"]), f"{values['score']:.3f}", *tier, *mark, *cells)
    return table
