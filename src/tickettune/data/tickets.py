"""Read ticket exports into one table: a text per ticket and the group of tickets it belongs to.

Inputs: ServiceNow list exports as CSV or XLSX (headers are field names such as `short_description`
or display labels such as `Short description`), ServiceNow Table API JSON (`{"result": [...]}` with
plain values or `{"display_value": ..., "value": ...}` objects), and any CSV/TSV/JSON/JSONL with a
text column and a label column. Column names are compared after normalising (case, spaces), and
display labels map to field names, so `--group-by Problem` and `--group-by problem_id` are one column.

Two types carry a table with where it came from (pandas calls `DataFrame.attrs` experimental, and many operations
drop it): `RawTable`, an export as read, and `TicketTable`, tickets with their text (and group) made.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import math
import re
import sys
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.jsonio import parse_json, parse_json_lines
from tickettune.core.textio import normalise_text, read_text_file

# Display labels of the incident table whose normalised form differs from the field name.
LABELS = {
    "configuration_item": "cmdb_ci", "problem": "problem_id", "resolution_notes": "close_notes",
    "resolution_code": "close_code", "opened": "opened_at", "closed": "closed_at", "resolved": "resolved_at",
    "caller": "caller_id", "channel": "contact_type", "created": "sys_created_on", "updated": "sys_updated_on",
}
LINK_FIELDS = ("problem_id", "parent_incident")
IDENTIFIERS = ("number", "sys_id")
DEFAULT_TEXT = ("short_description", "description")
FALLBACK_TEXT = ("text", "summary", "subject", "title", "body")
BUILT = ("row", "text", "group")


@dataclass(frozen=True)
class RawTable:
    """An export as read: `frame` holds strings under canonical column names, indexed by row, line or record
    number (`kind`); `headers` maps each canonical name to the header as the export wrote it (for messages)."""

    frame: pd.DataFrame
    source: str
    kind: str
    headers: dict[str, str]

    def columns(self, names: Sequence[str]) -> "RawTable":
        """The same table with only these columns."""
        return replace(self, frame=self.frame[list(names)])


@dataclass(frozen=True)
class TicketTable:
    """Tickets with their text made: `frame` has a `text` column (and, from `read_tickets`, `row` and `group`)
    followed by every source column.

    The other fields say where the tickets came from; they are None for a table built by hand
    (`TicketTable(frame)`), which `pairs.build_pairs` and the search accept as well.

        >>> table = TicketTable(pd.DataFrame({"text": ["vpn drops", "vpn down"], "group": ["PRB1", "PRB1"]}))
        >>> len(table), table.notes
        (2, [])
    """

    frame: pd.DataFrame
    source: Optional[str] = None
    text_columns: Optional[list[str]] = None
    group_by: Optional[str] = None
    linked_through: Optional[list[str]] = None  # the link fields that joined tickets into groups
    rows_read: Optional[int] = None
    notes: list[str] = field(default_factory=list)  # what was left out or changed, one line each
    headers: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    def provenance(self) -> dict[str, Any]:
        """The known facts of where the tickets came from (what a pairs datacard records)."""
        known = {"source": self.source, "rows_read": self.rows_read, "text_columns": self.text_columns,
                 "group_by": self.group_by, "linked_through": self.linked_through}
        return {key: value for key, value in known.items() if value is not None}


def canonical(name: Any) -> str:
    """`Short description`, `short-description` and `SHORT_DESCRIPTION` all become `short_description`."""
    key = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    return LABELS.get(key, key)


def _cell(value: Any) -> str:
    """One exported value as text; Table API reference objects give their display value."""
    if isinstance(value, dict):
        for key in ("display_value", "value"):
            if value.get(key) not in (None, ""):
                return _cell(value[key])
        return ""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, list):
        return ", ".join(filter(None, (_cell(v) for v in value)))
    return str(value).strip()


def _table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], numbers: Sequence[int], source: str,
           kind: str) -> RawTable:
    """Rows of cells under `headers` as a string table with canonical column names."""
    names = [canonical(h) for h in headers]
    seen: dict[str, Any] = {}
    for header, name in zip(headers, names):
        if not name:
            continue
        if name in seen:
            raise UserError(f"{source}: columns '{seen[name]}' and '{header}' both mean '{name}'; remove one of them")
        seen[name] = header
    keep = [i for i, name in enumerate(names) if name]
    data = [[_cell(row[i]) if i < len(row) else "" for i in keep] for row in rows]
    frame = pd.DataFrame(data, columns=[names[i] for i in keep], dtype=object)
    frame.index = pd.Index(list(numbers), name=kind)
    return RawTable(frame, source, kind, {names[i]: str(headers[i]) for i in keep})


def _read_delimited(text: str, source: str, delimiter: str) -> RawTable:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long descriptions exceed the 128 KiB default
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    try:
        header: list[str] = next(reader, []) or []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                where = f"{source}: row {len(rows) + 2} (line {reader.line_num})"
                raise UserError(f"{where} has {len(row)} fields, the header has {len(header)}; "
                                f"quote texts that contain '{delimiter}' or line breaks and re-export")
            rows.append(row)
    except csv.Error as exc:
        raise UserError(f"{source}: malformed CSV near line {reader.line_num} ({exc}); fix the quoting or re-export") from None
    if not header or not any(h.strip() for h in header):
        raise UserError(f"{source}: has no header row; the first row must name the columns")
    # Data rows are numbered as a spreadsheet shows them: the header is row 1.
    return _table(header, rows, range(2, len(rows) + 2), source, "row")


def records_table(records: Any, source: str, kind: str, numbers: Sequence[int] | None = None) -> RawTable:
    """A list of ticket objects (JSON records, or tickets posted to `tickettune serve`) as a table of strings."""
    if not isinstance(records, list):
        raise UserError(f"{source}: expected a list of ticket objects, got {type(records).__name__}")
    numbers = list(numbers) if numbers is not None else list(range(1, len(records) + 1))
    columns: dict[str, None] = {}
    for number, record in zip(numbers, records):
        if not isinstance(record, dict):
            raise UserError(f"{source}: {kind} {number} is {type(record).__name__}, expected an object of field: value")
        columns.update(dict.fromkeys(record))
    headers = list(columns)
    rows = [[record.get(h) for h in headers] for record in records]
    return _table(headers, rows, numbers, source, kind)


def _read_json(text: str, source: str) -> RawTable:
    data = parse_json(text, source)
    if isinstance(data, dict):
        # Table API: {"result": [...]}; the JSONv2 processor: {"records": [...]}.
        key = next((k for k in ("result", "records") if k in data), None)
        if key is None:
            raise UserError(f"{source}: JSON object without a 'result' list; expected ServiceNow Table API output "
                            f"{{\"result\": [...]}} or a list of tickets (keys found: {', '.join(map(str, data))})")
        data = data[key]
    return records_table(data, source, "record")


def _read_jsonl(text: str, source: str) -> RawTable:
    lines = parse_json_lines(text, source)
    return records_table([value for _, value in lines], source, "line", [number for number, _ in lines])


def _read_xlsx(path: Path) -> RawTable:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as exc:
        raise UserError(f"{path}: not a readable XLSX workbook ({type(exc).__name__}); re-export it or save it as CSV") from None
    except Exception as exc:  # openpyxl reports damaged parts with many exception types
        raise UserError(f"{path}: not a readable XLSX workbook ({type(exc).__name__}: {str(exc)[:80]}); "
                        "re-export it or save it as CSV") from None
    try:
        rows = list(book.worksheets[0].iter_rows(values_only=True)) if book.worksheets else []
    except Exception as exc:
        raise UserError(f"{path}: damaged XLSX sheet ({type(exc).__name__}); re-export it or save it as CSV") from None
    finally:
        book.close()
    numbered = [(i, row) for i, row in enumerate(rows, start=1) if any(_cell(v) for v in row)]
    if not numbered:
        raise UserError(f"{path}: the first sheet is empty; expected a header row and one ticket per row")
    (_, header), body = numbered[0], numbered[1:]
    return _table(list(header), [row for _, row in body], [i for i, _ in body], str(path), "row")


def read_table(path: str | Path) -> RawTable:
    """Any supported export as a table of strings with canonical column names, indexed by row/line/record number."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".xls":
        raise UserError(f"{path}: old Excel .xls files are not supported; save it as .xlsx or CSV")
    if not path.is_file():
        raise UserError(f"{path}: {'is a directory, expected a file' if path.is_dir() else 'file not found; check the path'}")
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        raise UserError(f"{path}: file is empty; expected a ticket export with a header row")
    if kind in (".xlsx", ".xlsm") or head[:4] == b"PK\x03\x04":
        return _read_xlsx(path)
    text = read_text_file(path)
    stripped = text.lstrip()
    if kind in (".jsonl", ".ndjson") or (kind not in (".json", ".csv", ".tsv", ".txt") and stripped[:1] == "{"
                                          and "\n{" in stripped):
        table = _read_jsonl(text, str(path))
    elif kind == ".json" or (kind not in (".csv", ".tsv", ".txt") and stripped[:1] in "[{"):
        table = _read_json(text, str(path))
    else:
        first = text.split("\n", 1)[0]
        delimiter = "\t" if kind == ".tsv" else max(",;\t", key=first.count)
        table = _read_delimited(text, str(path), delimiter)
    if table.frame.empty:
        raise UserError(f"{path}: holds a header but no tickets; expected one ticket per row")
    return table


def resolve_column(table: RawTable | TicketTable, name: str, option: str) -> str:
    """The canonical column meant by `name`, or a UserError with the closest column."""
    key, columns = canonical(name), list(table.frame.columns)
    if key in columns:
        return key
    close = difflib.get_close_matches(key, columns, n=1, cutoff=0.6)
    hint = f"; did you mean '{table.headers.get(close[0], close[0])}'?" if close else ""
    found = ", ".join(table.headers.get(c, c) for c in columns)
    raise UserError(f"{table.source or 'tickets'}: no column '{name}' for {option}{hint} (columns: {found})")


def text_columns_of(table: RawTable, text_columns: Sequence[str] | None) -> list[str]:
    """The columns that make a ticket's text: those named (comma lists allowed), else the export's defaults."""
    if text_columns:
        names = [part.strip() for item in text_columns for part in str(item).split(",") if part.strip()]
        return [resolve_column(table, name, "--text-column") for name in names]
    for choices in (DEFAULT_TEXT, FALLBACK_TEXT):
        found = [c for c in choices if c in table.frame.columns]
        if found:
            return found[:2] if choices is DEFAULT_TEXT else found[:1]
    columns = ", ".join(table.headers.values())
    raise UserError(f"{table.source}: no short_description, description or text column; "
                    f"name the text with --text-column (columns: {columns})")


def build_text(parts: Sequence[str]) -> str:
    """The ticket text: its fields in order, one per line, a field that repeats an earlier one left out."""
    kept: list[str] = []
    for part in parts:
        part = part.strip()
        if part and all(normalise_text(part) != normalise_text(k) for k in kept):
            kept.append(part)
    return "\n".join(kept)


def link_components(keys: Sequence[Sequence[str]]) -> np.ndarray:
    """Component number per item: items that share a key, directly or through other items, are one component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids: dict[str, int] = {}
    rows, cols = [], []
    for item, item_keys in enumerate(keys):
        for key in item_keys:
            rows.append(item)
            cols.append(ids.setdefault(key, len(ids)))
    n = len(keys)
    size = n + len(ids)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, [n + c for c in cols])), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    # Renumber by first appearance so that the numbering follows the input order.
    _, first = np.unique(labels[:n], return_index=True)
    order = {label: rank for rank, label in enumerate(labels[:n][np.sort(first)])}
    return np.array([order[label] for label in labels[:n]], dtype=np.int64)


def _linked_groups(frame: pd.DataFrame) -> list[str]:
    """Group per ticket where tickets sharing a problem, or linked child-to-parent, form one group."""
    keys: list[list[str]] = []
    for number, record in zip(frame.index, frame.to_dict("records")):
        own = [f"ticket:{record[c]}" for c in IDENTIFIERS if record.get(c)] or [f"row:{number:09d}"]
        linked = [f"problem:{record['problem_id']}"] if record.get("problem_id") else []
        if record.get("parent_incident"):
            linked.append(f"ticket:{record['parent_incident']}")
        keys.append(own + linked)
    components = link_components(keys)
    # A group is named after its problem when it has one, else its lowest ticket number.
    names: dict[int, str] = {}
    for component, item_keys in zip(components, keys):
        best = min(item_keys)
        names[component] = min(names.get(component, best), best)
    return [names[c] for c in components]


def _rows_text(rows: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def read_tickets(path: str | Path, text_columns: Sequence[str] | None = None, group_by: str | None = None,
                 mask_pii: bool = False) -> TicketTable:
    """Tickets from an export: a frame of `row`, `text`, `group`, then every source column under its field name.

    `text_columns` (default: short_description then description) make the text. `group_by` (default
    `problem_id` when the export has it) decides which tickets are similar; grouping by `problem_id` or
    `parent_incident` also joins tickets linked through either. Rows without text (or, for other group
    fields, without a group) are skipped and counted in the table's `notes`.
    """
    raw = read_table(path)
    source, kind, table = raw.source, raw.kind, raw.frame
    texts = text_columns_of(raw, text_columns)
    if group_by is None:
        group_by = next((f for f in LINK_FIELDS if f in table.columns), None)
        if group_by is None:
            raise UserError(f"{source}: no problem_id or parent_incident column to group by; say which column holds "
                            f"the group with --group-by (columns: {', '.join(raw.headers.values())})")
    group_field = resolve_column(raw, group_by, "--group-by")
    linked = group_field in LINK_FIELDS
    frame = table.copy()
    frame["text"] = [build_text(parts) for parts in zip(*(table[c] for c in texts))]
    frame["group"] = _linked_groups(table) if linked else list(table[group_field])
    frame["row"] = list(table.index)
    notes: list[str] = []
    empty = frame["text"] == ""
    if empty.any():
        rows = list(frame.index[empty])
        notes.append(f"{source}: skipped {len(rows)} {kind}s with an empty {' and '.join(texts)} ({kind}s {_rows_text(rows)})")
    no_group = (frame["group"] == "") & ~empty
    if no_group.any():
        rows = list(frame.index[no_group])
        notes.append(f"{source}: skipped {len(rows)} {kind}s with an empty {group_field} ({kind}s {_rows_text(rows)})")
    frame = frame[~empty & ~no_group]
    if frame.empty:
        raise UserError(f"{source}: no {kind} has both a text ({', '.join(texts)}) and a {group_field}; "
                        "check --text-column and --group-by")
    if mask_pii:
        from tickettune.data.pii import mask_pii as mask

        masked = frame["text"].map(mask)
        notes.append(f"--mask-pii: personal data masked in {int((masked != frame['text']).sum())} of {len(frame)} texts")
        frame = frame.assign(text=masked)
    frame = frame[list(BUILT) + [c for c in frame.columns if c not in BUILT]].reset_index(drop=True)
    return TicketTable(frame, source=source, text_columns=texts, group_by=group_field,
                       linked_through=[f for f in LINK_FIELDS if f in table.columns] if linked else [],
                       rows_read=int(len(table)), notes=notes, headers=raw.headers)
