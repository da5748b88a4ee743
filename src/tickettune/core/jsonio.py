"""JSON written so that NaN becomes null and a reader never sees half a file."""

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
