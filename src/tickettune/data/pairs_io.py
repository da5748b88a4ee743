"""Read and write pair files: JSON, JSONL, CSV/TSV with a header, and the STS Benchmark TSV.

A pair table is a pandas DataFrame with columns `text1`, `text2`, `label` (a float in [0, 1])
and optionally `phase` (easy/medium/hard) and `negative` (a text dissimilar to `text1`, for
triplet-style losses).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.jsonio import parse_json, parse_json_lines
from tickettune.core.textio import read_text_file

TEXT1 = ("text1", "sentence1", "anchor", "query", "text_a")
TEXT2 = ("text2", "sentence2", "positive", "text_b")
LABEL = ("label", "score", "similarity")
PHASE = ("phase", "curriculum_phase", "difficulty_phase")
NEGATIVE = ("negative", "text3")
PHASE_ALIASES = {"1": "easy", "2": "medium", "3": "hard", "phase1": "easy", "phase2": "medium", "phase3": "hard",
                 "phase_1": "easy", "phase_2": "medium", "phase_3": "hard"}
COLUMNS = ("text1", "text2", "label", "phase", "negative")

PHASES = ("easy", "medium", "hard")  # curriculum phases, easiest first


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> str | None:
    lower = {str(k).strip().lower(): k for k in record}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _label(value: Any, where: str, scale: float = 1.0) -> float:
    if value is None or (isinstance(value, str) and not value.strip()) or isinstance(value, bool):
        raise UserError(f"{where}: field 'label' is missing; give a number in [0, 1]")
    try:
        number = float(value) / scale
    except (TypeError, ValueError):
        raise UserError(f"{where}: field 'label' = {value!r} is not a number; give a number in [0, 1]") from None
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise UserError(f"{where}: field 'label' = {value!r} is outside [0, 1]; rescale scores to [0, 1]")
    return number


def _text(value: Any, where: str, field: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise UserError(f"{where}: field '{field}' is missing; every pair needs two texts")
    if not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: field '{field}' must be text, not {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise UserError(f"{where}: field '{field}' is empty; remove the pair or fill in the text")
    return text


def records_to_frame(records: Iterable[Any], source: str, phase: str | None = None,
                     record_word: str = "record", first: int = 1) -> pd.DataFrame:
    rows = []
    for number, record in enumerate(records, start=first):
        where = f"{source}: {record_word} {number}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected an object with text1, text2 and label, got {type(record).__name__}")
        k1, k2, kl = _pick(record, TEXT1), _pick(record, TEXT2), _pick(record, LABEL)
        for key, field in ((k1, "text1"), (k2, "text2"), (kl, "label")):
            if key is None:
                raise UserError(f"{where}: field '{field}' is missing; columns found: {', '.join(map(str, record)) or 'none'}")
        row = {"text1": _text(record[k1], where, "text1"), "text2": _text(record[k2], where, "text2"),
               "label": _label(record[kl], where)}
        kp = _pick(record, PHASE)
        row_phase = phase if phase is not None else (record.get(kp) if kp is not None else None)
        if row_phase is not None and not (isinstance(row_phase, float) and math.isnan(row_phase)) and str(row_phase).strip():
            row["phase"] = normalise_phase(row_phase, where)
        kn = _pick(record, NEGATIVE)
        if kn is not None and record[kn] is not None and str(record[kn]).strip() and str(record[kn]) != "nan":
            row["negative"] = str(record[kn]).strip()
        rows.append(row)
    if not rows:
        raise UserError(f"{source}: holds no pairs; expected at least one record with text1, text2 and label")
    frame = pd.DataFrame(rows)
    if "phase" in frame and frame["phase"].isna().any():
        missing = int(frame["phase"].isna().idxmax()) + first
        raise UserError(f"{source}: {record_word} {missing}: field 'phase' is missing while other records have one")
    return frame


def normalise_phase(value: Any, where: str) -> str:
    text = str(value).strip().lower()
    if text.endswith(".0"):
        text = text[:-2]
    text = PHASE_ALIASES.get(text, text)
    if text not in PHASES:
        raise UserError(f"{where}: field 'phase' = {value!r} is not one of {', '.join(PHASES)} (or 1, 2, 3)")
    return text


def _is_sts(text: str) -> bool:
    first = text.split("\n", 1)[0].split("\t")
    if len(first) < 7:
        return False
    try:
        float(first[4])
        return True
    except ValueError:
        return False


def _read_sts(text: str, source: str) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        where = f"{source}: line {number}"
        if len(parts) < 7:
            raise UserError(f"{where}: STS Benchmark lines need 7 tab-separated columns, found {len(parts)}")
        rows.append({"text1": _text(parts[5], where, "sentence1"), "text2": _text(parts[6], where, "sentence2"),
                     "label": _label(parts[4], where, scale=5.0)})
    return pd.DataFrame(rows)


def read_pairs(path: str | Path) -> pd.DataFrame:
    """Read any supported pair file into a validated pair table."""
    path = Path(path)
    text = read_text_file(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    stripped = text.lstrip()
    if kind == ".jsonl" or (kind not in (".json", ".csv", ".tsv") and stripped[:1] == "{" and "\n{" in stripped):
        return _read_jsonl(text, str(path))
    if kind == ".json" or stripped[:1] in "[{":
        return _read_json(text, str(path))
    if _is_sts(text):
        return _read_sts(text, str(path))
    return _read_delimited(text, str(path), "\t" if kind == ".tsv" or "\t" in text.split("\n", 1)[0] else ",")


def _read_json(text: str, source: str) -> pd.DataFrame:
    data = parse_json(text, source)
    if isinstance(data, list):
        return records_to_frame(data, source)
    if isinstance(data, dict):
        if isinstance(data.get("pairs"), list):
            return records_to_frame(data["pairs"], source)
        frames = []
        for key, records in data.items():
            if not isinstance(records, list):
                raise UserError(f"{source}: key '{key}' must hold a list of pairs (an object of lists per phase)")
            frames.append(records_to_frame(records, f"{source} [{key}]", phase=normalise_phase(key, f"{source}: key '{key}'")))
        if not frames:
            raise UserError(f"{source}: holds no pairs; expected a list of objects or an object of lists per phase")
        return pd.concat(frames, ignore_index=True)
    raise UserError(f"{source}: expected a list of pair objects or an object of lists per phase, got {type(data).__name__}")


def _read_jsonl(text: str, source: str) -> pd.DataFrame:
    return records_to_frame([value for _, value in parse_json_lines(text, source)], source, record_word="line")


def _read_delimited(text: str, source: str, delimiter: str) -> pd.DataFrame:
    try:
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, strict=True)
        header = reader.fieldnames or []
        records = []
        for record in reader:
            if None in record:
                raise UserError(f"{source}: row {reader.line_num} has more fields than the header; "
                                f"quote texts that contain '{delimiter}'")
            records.append(record)
    except csv.Error as exc:
        raise UserError(f"{source}: malformed CSV near line {reader.line_num} ({exc}); fix the quoting") from None
    if not header:
        raise UserError(f"{source}: has no header row; the first row must name the columns text1,text2,label")
    # Data rows start on line 2, after the header.
    return records_to_frame(records, source, record_word="row", first=2)


def write_pairs(frame: pd.DataFrame, path: Path) -> None:
    """JSONL, one pair a line, fixed key order: the same pairs always make the same bytes."""
    columns = [c for c in COLUMNS if c in frame.columns]
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in frame[columns].itertuples(index=False):
            record = {c: v for c, v in zip(columns, row) if not (isinstance(v, float) and math.isnan(v)) and v is not None}
            if "label" in record:
                record["label"] = round(float(record["label"]), 6)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


PAIR_FILES = {"train": "train.jsonl", "eval": "eval.jsonl", "test": "test.jsonl"}
TICKET_FILES = {"train": "train_tickets.jsonl", "eval": "eval_tickets.jsonl", "test": "test_tickets.jsonl"}
TICKET_COLUMNS = ("number", "text", "group")


def has_train_tickets(pairs_dir: str | Path | None) -> bool:
    """Whether a pairs directory holds train tickets (so the group recipe can train on them)."""
    return pairs_dir is not None and (Path(pairs_dir) / TICKET_FILES["train"]).is_file()


def write_tickets(frame: pd.DataFrame, path: Path) -> None:
    """JSONL, one ticket a line: number (where known), text and group, as `read_ticket_set` reads them back."""
    columns = [c for c in TICKET_COLUMNS if c in frame.columns]
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in frame[columns].itertuples(index=False):
            handle.write(json.dumps(dict(zip(columns, map(str, row))), ensure_ascii=False) + "\n")


def read_ticket_set(path: str | Path) -> pd.DataFrame:
    """A ticket file written by `tickettune pairs` (train/eval/test_tickets.jsonl): columns text and group."""
    path = Path(path)
    records = [value for _, value in parse_json_lines(read_text_file(path), str(path))]
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not all(isinstance(record.get(c), str) and record[c].strip()
                                                   for c in ("text", "group")):
            raise UserError(f"{path}: ticket {number} needs a non-empty text and group; rebuild it with `tickettune pairs`")
    if not records:
        raise UserError(f"{path}: holds no tickets; rebuild it with `tickettune pairs`")
    return pd.DataFrame.from_records(records).astype(str)


REPRESENTATIVE_FILE = "test_representative.jsonl"


def read_pair_dir_extras(folder: Path) -> tuple[pd.DataFrame | None, dict[str, pd.DataFrame], str]:
    """What a `tickettune pairs` directory holds beside its three pair files: the representative test pairs, each
    split's tickets, and what its test pairs are ("hard" when lexically filtered, else "test")."""
    representative = read_pairs(folder / REPRESENTATIVE_FILE) if (folder / REPRESENTATIVE_FILE).is_file() else None
    tickets = {name: read_ticket_set(folder / file) for name, file in TICKET_FILES.items() if (folder / file).is_file()}
    test_name = "test"
    card = folder / "datacard.json"
    if card.is_file():
        try:
            options = json.loads(card.read_text(encoding="utf-8")).get("options") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise UserError(f"{card} is not a valid data card; rebuild the directory with `tickettune pairs`") from None
        test_name = "hard" if options.get("test_difficulty") == "hard" else "test"
    return representative, tickets, test_name


def pair_file(path: str | Path, role: str) -> Path:
    """A pair file itself, or the `role` file (train/eval/test) inside a directory made by `tickettune pairs`."""
    path = Path(path)
    if path.is_dir():
        target = path / PAIR_FILES[role]
        if not target.is_file():
            raise UserError(f"{path} has no {role} set ({PAIR_FILES[role]}); make it with `tickettune pairs` "
                            "or pass the file itself")
        return target
    return path
