"""JSON written so that NaN becomes null and a reader never sees half a file; JSON read with errors that name the line."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from tickettune.core.errors import UserError


def clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return clean(value.item())
    return value


def dumps(value: Any) -> str:
    return json.dumps(clean(value), indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | Path, value: Any, overwrite: bool = True) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it or choose another file")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(dumps(value))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_json(text: str, source: str) -> Any:
    """A JSON document's value; malformed JSON is a UserError naming the line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}: malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); "
                        "fix or re-export it") from None


def parse_json_lines(text: str, source: str) -> list[tuple[int, Any]]:
    """Each non-blank line of a JSONL text as (line number, value); a bad line is a UserError naming it."""
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: line {number} is not valid JSON ({exc.msg}); fix or remove it") from None
    return values
