"""Text as files hold it and as tickettune compares it: reading any export's bytes, and the one normal form.

A leaf of the package: the readers (tickets, pairs_io), the pair builder, the checks, the leakage guard and the
run fingerprints all import it, it imports nothing of theirs.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd

from tickettune.core.errors import UserError


def normalise_text(text: str) -> str:
    """Case and whitespace folded: the form under which two texts count as the same text."""
    return " ".join(str(text).casefold().split())


def read_text_file(path: Path) -> str:
    """Whole file as text; gzip is unpacked; UTF-8 first, then the encodings exports commonly use."""
    # Not charset_normalizer (measured for issue 18, benchmarks/encodings.py, RESULTS.md "Text encodings"): it agrees
    # on UTF-8, BOM files and a one-row cp1252 file, but guesses a 200-row German cp1252 export as mac_latin2
    # ("Büro" -> "BŁro", "€" -> "Ä") and latin-1 bytes as cp1256 (Arabic); an export tool writes cp1252 far more
    # often than either. It is also slower on the 38k-ticket file (14.0 ms against 1.0 ms for the UTF-8 decode, as recorded).
    if not path.exists():
        raise UserError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            raise UserError(f"{path}: is a damaged gzip file; re-export it") from None
    if not raw.strip():
        raise UserError(f"{path}: file is empty; expected pairs")
    if b"\x00" in raw[:4096] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{path}: looks like a binary file, not text; pass a JSON, JSONL, CSV or TSV file")
    for encoding in ("utf-8-sig", "utf-16", "cp1252"):
        if encoding == "utf-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            continue
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def table_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of a table's rows in order (pandas' row hashes, index left out): the same pairs give the same value."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
