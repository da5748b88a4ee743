"""The tickets a running service searches: a ticket file's, plus those added, updated or deleted through the
service (POST /tickets, or a sync from an instance).

The file's tickets are indexed as `tickettune search` indexes them, through `search.IndexCache`. That
cache entry is never changed (the service changes its own copy in memory), so its key, a hash of the
file's texts, stays true and `search` keeps sharing it. Changes are user data, not cache: they live in
the store (`store.Store`: SQLite by default, FILE.added/store.sqlite beside the ticket file, or
PostgreSQL), with each ticket's vector per model, so a restart encodes nothing it encoded before.
Several processes, on one host or many, share one store: each applies the others' changes before its
next request (`refresh`, one indexed query).

Adding a ticket costs its encoding and one small transaction: the columns are Python lists and the
index grows in place (`VectorIndex.upsert`), so nothing is copied per ticket.

The store used to be a folder of `tickets.jsonl` and `vectors-<model>.bin`; such a folder is imported
into the database on first start (once: the import is recorded in the same transaction) and left as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.models import model_fingerprint
from tickettune.serving.index import IndexCache, VectorIndex
from tickettune.serving.search import check_tickets
from tickettune.serving.store import Change, Store, digest

Encoder = Callable[[list[str]], np.ndarray]


def model_key(model_folder: Path) -> str:
    return hashlib.sha256(model_fingerprint(model_folder).encode()).hexdigest()[:16]


class LegacyFolder:
    """The folder store of earlier versions: `tickets.jsonl` (a later line of a number replaces it) and, per
    model, `vectors-<model_key>.bin` (an 8-byte text hash and the vector, one record a line)."""

    def __init__(self, folder: Path, model: str, dim: int):
        self.lines = folder / "tickets.jsonl"
        self.vectors_path = folder / f"vectors-{model}.bin"
        self.record = np.dtype([("digest", "S8"), ("vector", "<f4", (dim,))])

    def read(self) -> tuple[list[dict], dict[int, np.ndarray]]:
        """The tickets, latest of each number last, and the stored vector of each line whose hash matches its text."""
        data = self.lines.read_bytes()
        data = data[:data.rfind(b"\n") + 1]  # a line without its newline was never finished (nor acknowledged)
        lines = []
        for number, line in enumerate(data.splitlines(), start=1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record.get("number"):
                raise UserError(f"{self.lines}: line {number} is not a ticket with a number and a text; "
                                "fix or remove that line")
            lines.append(record)
        stored = {}
        if self.vectors_path.is_file():
            found = np.fromfile(self.vectors_path, self.record, count=min(len(lines), self.vectors_path.stat().st_size
                                                                       // self.record.itemsize))
            for i, item in enumerate(found):
                if item["digest"] == digest(lines[i]["text"]):
                    stored[i] = item["vector"]
        return lines, stored


class LiveTickets:
    """Tickets with their index, to search and to change while serving.

    Input: the file's tickets (a DataFrame with `text`, `number` and any other columns), their index, an open
    `Store` and the encoder. Not thread-safe: the service makes every call from its one model thread.
    """

    def __init__(self, tickets: pd.DataFrame, index: VectorIndex, store: Store, encode: Encoder, model: str,
                 text_column: Optional[str] = None):
        self.columns: dict[str, list] = {c: tickets[c].tolist() for c in tickets.columns}
        self.n_rows = len(tickets)
        self.index = index
        self.store = store
        self.encode = encode
        self.model = model
        self.text_column = text_column
        self.seq = 0
        self.deleted: set[int] = set()
        self.rows_of: dict[str, list[int]] = {}
        self._frame: Optional[pd.DataFrame] = None
        for row, number in enumerate(self.columns["number"]):
            if number:
                self.rows_of.setdefault(number, []).append(row)

    @classmethod
    def open(cls, tickets: pd.DataFrame, model_folder: Path, encode: Encoder, store: str,
             cache_dir: Optional[Path] = None, text_column: Optional[str] = None,
             backend: str = "auto", check_index: Optional[Callable[[VectorIndex, bool], None]] = None
             ) -> tuple["LiveTickets", bool]:
        """The file's tickets from the index cache (built if missing) plus the store's; and whether the index was cached.

        `store` is a folder, a SQLite file or a database URL (`store.store_url`). `check_index(index, cached)` runs
        before anything of the store is read, so that an encoder it refuses (another model's index) has encoded
        none of the store's tickets that lack its vectors.
        """
        tickets = check_tickets(tickets)
        if "number" not in tickets.columns:
            tickets["number"] = ""
        index, cached = IndexCache(cache_dir).load_or_build(model_folder, list(tickets["text"]), encode, backend,
                                                            writable=True)
        if check_index is not None:
            check_index(index, cached)
        live = cls(tickets, index, Store.open(str(store)), encode, model_key(model_folder), text_column)
        live.import_legacy()
        live.refresh()
        return live, cached

    def __len__(self) -> int:
        return self.n_rows - len(self.deleted)

    @property
    def tickets(self) -> pd.DataFrame:
        """Every row (deleted ones too: see `deleted`) as a DataFrame, built when asked after a change."""
        if self._frame is None:
            self._frame = pd.DataFrame(self.columns, dtype=object)
        return self._frame

    def frame(self, rows) -> pd.DataFrame:
        """The given rows only, as a DataFrame (cheap whatever the number of tickets)."""
        rows = [int(r) for r in rows]
        return pd.DataFrame({c: [values[r] for r in rows] for c, values in self.columns.items()}, dtype=object)

    def number_of_sys_id(self) -> dict[str, str]:
        """sys_id -> number of the live tickets that came from an instance (they carry its sys_id)."""
        sys_ids = self.columns.get("sys_id")
        if sys_ids is None:
            return {}
        return {sys_id: self.columns["number"][row] for row, sys_id in enumerate(sys_ids)
                if sys_id and row not in self.deleted and self.columns["number"][row]}

    # --- changes ---

    def import_legacy(self) -> None:
        """Move an old folder store's tickets (and this model's vectors) into the database, once."""
        folder = self.store.folder
        if folder is None or not (folder / "tickets.jsonl").is_file():
            return
        legacy = LegacyFolder(folder, self.model, int(self.index.vectors.shape[1]))
        once = f"imported {legacy.lines.resolve()}"
        if self.store.has_key(once):
            return
        lines, stored = legacy.read()
        latest = {r["number"]: i for i, r in enumerate(lines)}
        keep = sorted(latest.values())
        records = [lines[i] for i in keep]
        missing = [i for i in keep if i not in stored]
        encoded: Iterator[np.ndarray] = iter(self.encode([lines[i]["text"] for i in missing]) if missing else [])
        vectors = np.stack([stored[i] if i in stored else next(encoded) for i in keep]) if keep else None
        self.store.write(records, source="imported", model=self.model, vectors=vectors, once=once)

    def refresh(self) -> None:
        """Take in what other processes (or earlier runs) changed in the store."""
        self._apply_changes(self.store.changes(self.seq))

    def upsert(self, records: list[dict], source: str = "posted", skip_incomplete: bool = False) -> tuple[int, int]:
        """Add or replace tickets given as objects of field: value, each with a `number`; (added, updated) counts.

        A ticket's text is made from its fields as for the ticket file; a number posted again replaces
        the whole ticket. Only texts that changed are encoded. A ticket without number or text is an
        error, or (`skip_incomplete`, for records synced from an instance) left out.
        """
        new = self._records(records, skip_incomplete)
        if not new:
            return 0, 0
        vectors = self._vectors_for(new)
        earlier, seq = self.store.write(new, source=source, model=self.model, vectors=vectors, after=self.seq)
        self._apply_changes(earlier)
        self.seq = seq
        return self._apply(new, vectors)

    def delete(self, numbers: list[str], source: str = "synced") -> int:
        """Mark tickets deleted (kept in the store as deleted, left out of every search); how many were live."""
        live = [n for n in numbers if n in self.rows_of]
        if not live:
            return 0
        earlier, seq = self.store.write([], source=source, model=self.model, deleted=live, after=self.seq)
        self._apply_changes(earlier)
        self.seq = seq
        self._delete(live)
        return len(live)

    def _records(self, records: list[dict], skip_incomplete: bool = False) -> list[dict]:
        """Each ticket's fields (as text, as a ticket file's) and its `text`, made from the fields it has as a file
        of its own would give it (one post may mix layouts); plain Python per ticket, pandas only per layout."""
        from tickettune.data.tickets import build_text, records_table, text_columns_of

        table = records_table(records, "tickets", "ticket", numbers=range(len(records)))
        wanted = self.text_column or "short_description, description or text"
        text_columns: dict[tuple, Optional[list[str]]] = {}
        found: dict[str, dict] = {}
        for i, row in zip(table.frame.index, table.frame.to_dict("records")):
            fields = {c: v for c, v in row.items() if v != ""}
            layout = tuple(fields)
            if layout not in text_columns:
                try:
                    text_columns[layout] = text_columns_of(table.columns(layout), [self.text_column]
                                                           if self.text_column else None)
                except UserError:
                    text_columns[layout] = None
            if text_columns[layout] is None:
                if skip_incomplete:
                    continue
                raise UserError(f"tickets[{i}]: no text in {wanted}; send the ticket text in "
                                f"{self.text_column or 'one of them'}")
            number = fields.get("number", "").strip()
            if not number:
                if skip_incomplete:
                    continue
                raise UserError(f"tickets[{i}].number: missing or empty; every ticket needs its number")
            fields.update(number=number, text=build_text([fields[c] for c in text_columns[layout] or ()]))
            found.pop(number, None)  # the last of a number wins, as it would in the store
            found[number] = fields
        return list(found.values())

    def _vectors_for(self, records: list[dict]) -> np.ndarray:
        """A vector per record: the index's own where the ticket is live with the same text, else encoded."""
        vectors = np.zeros((len(records), self.index.vectors.shape[1]), np.float32)
        encode = []
        for i, record in enumerate(records):
            rows = self.rows_of.get(record["number"])
            if rows and self.columns["text"][rows[0]] == record["text"]:
                vectors[i] = self.index.vectors[rows[0]]
            else:
                encode.append(i)
        if encode:
            vectors[encode] = self.encode([records[i]["text"] for i in encode])
        return vectors

    def _apply_changes(self, changes: list[Change]) -> None:
        """Apply store changes (others', or earlier runs'), with vectors from the store or encoded when missing."""
        if not changes:
            return
        latest = {c.number: c for c in changes}
        self.seq = max(self.seq, changes[-1].seq)
        records = [c.fields for c in latest.values() if c.fields is not None]
        stored = self.store.vectors(self.model, [r["number"] for r in records]) if records else {}
        vectors = np.zeros((len(records), self.index.vectors.shape[1]), np.float32)
        missing = []
        for i, record in enumerate(records):
            found = stored.get(record["number"])
            if found is not None and found[0] == digest(record["text"]):
                vectors[i] = found[1]
            else:
                missing.append(i)
        if missing:
            # Written by a process with another model (or a crash before its vectors): encoded once, then kept.
            vectors[missing] = self.encode([records[i]["text"] for i in missing])
            self.store.put_vectors(self.model, [records[i]["number"] for i in missing],
                                   [records[i]["text"] for i in missing], vectors[missing])
        self._apply(records, vectors)
        self._delete([c.number for c in latest.values() if c.fields is None])

    def _apply(self, records: list[dict], vectors: np.ndarray) -> tuple[int, int]:
        if not records:
            return 0, 0
        self._frame = None
        rows, added = [], 0
        for record in records:
            for column in record:
                if column not in self.columns:
                    self.columns[column] = [""] * self.n_rows
            existing = self.rows_of.get(record["number"])
            if existing is None:
                row = self.n_rows
                self.n_rows += 1
                for column, values in self.columns.items():
                    values.append(record.get(column, ""))
                self.rows_of[record["number"]] = [row]
                rows.append(row)
                added += 1
                continue
            for row in existing:
                # A replaced ticket keeps none of its old fields.
                for column, values in self.columns.items():
                    values[row] = record.get(column, "")
                self.deleted.discard(row)
            rows += existing
        repeats = [len(self.rows_of[r["number"]]) for r in records]
        self.index.upsert(np.array(rows), np.repeat(vectors, repeats, axis=0))
        return added, len(records) - added

    def _delete(self, numbers: list[str]) -> None:
        for number in numbers:
            rows = self.rows_of.pop(number, None)
            if rows:
                self.deleted.update(rows)
                self._frame = None

    def search(self, queries: np.ndarray, ks: list[int], excluded: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, the scores and rows of its `k` best tickets, leaving out its `excluded` rows and deleted
        tickets; one scan for all."""
        gone = list(self.deleted)
        depth = max(k + len(rows) for k, rows in zip(ks, excluded)) + len(gone)
        scores, rows = self.index.search(queries, min(depth, len(self.index)))
        found = []
        for row_scores, row_numbers, k, left_out in zip(scores, rows, ks, excluded):
            keep = (row_numbers >= 0) & ~np.isin(row_numbers, list(left_out) + gone)
            found.append((row_scores[keep][:k], row_numbers[keep][:k]))
        return found
