"""The tickets a running service searches: a ticket file's, plus those added or updated through the service.

The file's tickets are indexed as `tickettune search` indexes them, through `search.IndexCache`. That
cache entry is never changed (the service changes its own copy in memory), so its key, a hash of the
file's texts, stays true and `search` keeps sharing it. Tickets posted to the service are user data,
not cache, so they live in a store folder (the service's default: FILE.added/ beside the ticket file):

- `tickets.jsonl`: each posted ticket on one line, with the `text` that was indexed; a later line of
  the same number replaces the ticket. It is a ticket file itself (`tickettune search --tickets
  FILE.added/tickets.jsonl`).
- `vectors-<model>.bin`: for each line, an 8-byte hash of its text and its vector under one model, so
  that a restart encodes nothing it encoded before. A line whose vector is missing (a crash between
  the two writes, a new model) or whose hash differs (a hand-edited line) is encoded again.

Several server processes (`--workers N`) share one store: every write holds an exclusive lock on the
folder, and before each search a process reads the lines the others appended (`refresh`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd

from .errors import UserError
from .search import IndexCache, VectorIndex, check_tickets, model_fingerprint, with_text

Encoder = Callable[[list[str]], np.ndarray]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:8]


class TicketStore:
    """The posted tickets (`tickets.jsonl`) and their vectors under one model; the module docstring has the layout."""

    def __init__(self, folder: Path, model_folder: Path, dim: int):
        self.folder = Path(folder)
        self.lines_path = self.folder / "tickets.jsonl"
        model_key = hashlib.sha256(model_fingerprint(model_folder).encode()).hexdigest()[:16]
        self.vectors_path = self.folder / f"vectors-{model_key}.bin"
        self.record = np.dtype([("digest", "S8"), ("vector", "<f4", (dim,))])
        self.dim = dim
        # How much of tickets.jsonl this process has applied; lines are numbered from 0 in vector positions.
        self.read_bytes = 0
        self.read_lines = 0

    def _fail(self, exc: OSError) -> UserError:
        return UserError(f"cannot use the ticket store {self.folder} ({exc.strerror or exc}); "
                         "make it writable or pass another --store")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The folder itself is the lock (flock on its descriptor), so a read-only store can still be read.
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError as exc:
            raise self._fail(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_new(self, encode: Encoder) -> tuple[list[dict], np.ndarray]:
        """The tickets appended since the last call (by any process) and their vectors, encoding any that lack one."""
        try:
            if not self.lines_path.is_file() or self.lines_path.stat().st_size == self.read_bytes:
                return [], np.empty((0, self.dim), np.float32)
        except OSError as exc:
            raise self._fail(exc) from None
        with self._locked():
            return self._read_new(encode)

    def append(self, records: list[dict], vectors: np.ndarray, encode: Encoder) -> tuple[list[dict], np.ndarray]:
        """Write `records` (each with its `text`) and their vectors, durably, after what other processes appended.

        Returns what the others appended since this process last read (to apply before `records`).
        """
        with self._locked():
            earlier = self._read_new(encode)
            data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
            try:
                if self.lines_path.is_file() and self.lines_path.stat().st_size != self.read_bytes:
                    # An unfinished last line: a writer died mid-line before it answered, so nobody was told it was kept.
                    os.truncate(self.lines_path, self.read_bytes)
                with open(self.lines_path, "ab") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise self._fail(exc) from None
            self._write_vectors(range(self.read_lines, self.read_lines + len(records)),
                                [r["text"] for r in records], vectors)
            self.read_bytes += len(data)
            self.read_lines += len(records)
        return earlier

    def _read_new(self, encode: Encoder) -> tuple[list[dict], np.ndarray]:
        try:
            with open(self.lines_path, "rb") as handle:
                handle.seek(self.read_bytes)
                data = handle.read()
        except FileNotFoundError:
            return [], np.empty((0, self.dim), np.float32)
        except OSError as exc:
            raise self._fail(exc) from None
        data = data[:data.rfind(b"\n") + 1]  # a line without its newline is still being written, or was never finished
        records = []
        for number, line in enumerate(data.splitlines(), start=self.read_lines + 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record.get("number"):
                raise UserError(f"{self.lines_path}: line {number} is not a ticket with a number and a text; "
                                "fix or remove that line")
            records.append(record)
        vectors = self._read_vectors(self.read_lines, [r["text"] for r in records], encode)
        self.read_bytes += len(data)
        self.read_lines += len(records)
        return records, vectors

    def _read_vectors(self, start: int, texts: list[str], encode: Encoder) -> np.ndarray:
        stored = np.empty(0, self.record)
        if self.vectors_path.is_file():
            stored = np.fromfile(self.vectors_path, self.record, count=len(texts),
                                 offset=start * self.record.itemsize) if texts else stored
        vectors = np.zeros((len(texts), self.dim), np.float32)
        digests = np.array([_digest(t) for t in texts], dtype="S8")
        have = np.zeros(len(texts), bool)
        have[:len(stored)] = stored["digest"] == digests[:len(stored)]
        vectors[:len(stored)][have[:len(stored)]] = stored["vector"][have[:len(stored)]]
        missing = np.flatnonzero(~have)
        if len(missing):
            vectors[missing] = encode([texts[i] for i in missing])
            self._write_vectors(start + missing, [texts[i] for i in missing], vectors[missing])
        return vectors

    def _write_vectors(self, positions, texts: list[str], vectors: np.ndarray) -> None:
        records = np.zeros(len(texts), self.record)
        records["digest"] = [_digest(t) for t in texts]
        records["vector"] = vectors
        try:
            with open(self.vectors_path, "r+b" if self.vectors_path.is_file() else "w+b") as handle:
                for position, record in zip(positions, records):
                    handle.seek(int(position) * self.record.itemsize)  # past the end leaves zeros: hashes that never match
                    handle.write(record.tobytes())
        except OSError as exc:
            raise self._fail(exc) from None


class LiveTickets:
    """Tickets with their index, to search and to add to or update while serving.

    Not thread-safe: the service makes every call from its one model thread.
    """

    def __init__(self, tickets: pd.DataFrame, index: VectorIndex, store: TicketStore, encode: Encoder,
                 text_column: Optional[str] = None):
        self.tickets = tickets
        self.index = index
        self.store = store
        self.encode = encode
        self.text_column = text_column
        self.rows_of: dict[str, list[int]] = {}
        for row, number in enumerate(tickets["number"]):
            if number:
                self.rows_of.setdefault(number, []).append(row)

    @classmethod
    def open(cls, tickets: pd.DataFrame, model_folder: Path, encode: Encoder, store_dir: Path,
             cache_dir: Optional[Path] = None, text_column: Optional[str] = None,
             backend: str = "auto") -> tuple["LiveTickets", bool]:
        """The file's tickets from the index cache (built if missing) plus the store's; and whether the index was cached."""
        tickets = check_tickets(tickets)
        if "number" not in tickets.columns:
            tickets["number"] = ""
        index, cached = IndexCache(cache_dir).load_or_build(model_folder, list(tickets["text"]), encode, backend,
                                                            writable=True)
        live = cls(tickets, index, TicketStore(store_dir, model_folder, index.vectors.shape[1]), encode, text_column)
        live.refresh()
        return live, cached

    def __len__(self) -> int:
        return len(self.tickets)

    def refresh(self) -> None:
        """Take in the tickets that other processes (or earlier runs) appended to the store."""
        self._apply(*self.store.read_new(self.encode))

    def upsert(self, records: list[dict]) -> tuple[int, int]:
        """Add or replace tickets given as objects of field: value, each with a `number`; (added, updated) counts.

        A ticket's text is made from its fields as for the ticket file; a number posted again replaces
        the whole ticket. Nothing else is re-encoded.
        """
        from .tickets import records_table

        table = records_table(records, "tickets", "ticket", numbers=range(len(records)))
        wanted = self.text_column or "short_description, description or text"
        # Each ticket's text from the fields it has, as a file of its own would give it: one post may mix layouts.
        layout = table.ne("").apply(lambda row: tuple(row.index[row]), axis=1)
        parts = []
        for columns, part in table.groupby(layout, sort=False):
            try:
                parts.append(with_text(part[list(columns)], self.text_column))
            except UserError:
                raise UserError(f"tickets[{part.index[0]}]: no text in {wanted}; send the ticket text in "
                                f"{self.text_column or 'one of them'}") from None
        frame = pd.concat(parts).sort_index().fillna("")
        numbers = frame["number"].str.strip() if "number" in frame.columns else pd.Series("", index=frame.index)
        for i, number in zip(frame.index, numbers):
            if not number:
                raise UserError(f"tickets[{i}].number: missing or empty; every ticket needs its number")
        frame = frame.assign(number=numbers)
        # The last of a number wins, as it would in the store.
        frame = frame.drop_duplicates("number", keep="last")
        new = frame.to_dict("records")
        vectors = self.encode([r["text"] for r in new])
        self._apply(*self.store.append(new, vectors, self.encode))
        return self._apply(new, vectors)

    def _apply(self, records: list[dict], vectors: np.ndarray) -> tuple[int, int]:
        latest = {}
        for record, vector in zip(records, vectors):
            latest[record["number"]] = (record, vector)
        replaced_rows, replaced_vectors, added = [], [], []
        for number, (record, vector) in latest.items():
            rows = self.rows_of.get(number)
            if rows is None:
                self.rows_of[number] = [len(self.tickets) + len(added)]
                added.append((record, vector))
                continue
            for column in record:
                if column not in self.tickets.columns:
                    self.tickets[column] = ""
            for row in rows:
                # A replaced ticket keeps none of its old fields.
                self.tickets.loc[row, :] = ""
                self.tickets.loc[row, list(record)] = list(record.values())
                replaced_rows.append(row)
                replaced_vectors.append(vector)
        if added:
            self.tickets = pd.concat([self.tickets, pd.DataFrame([r for r, _ in added])], ignore_index=True).fillna("")
        rows = replaced_rows + list(range(len(self.tickets) - len(added), len(self.tickets)))
        if rows:
            self.index.upsert(np.array(rows), np.stack(replaced_vectors + [v for _, v in added]))
        return len(added), len(latest) - len(added)

    def search(self, queries: np.ndarray, ks: list[int], excluded: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, the scores and rows of its `k` best tickets, leaving out its `excluded` rows; one scan for all."""
        depth = max(k + len(rows) for k, rows in zip(ks, excluded))
        scores, rows = self.index.search(queries, min(depth, len(self.index)))
        found = []
        for row_scores, row_numbers, k, left_out in zip(scores, rows, ks, excluded):
            keep = (row_numbers >= 0) & ~np.isin(row_numbers, left_out)
            found.append((row_scores[keep][:k], row_numbers[keep][:k]))
        return found
