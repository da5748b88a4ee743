"""Output folders that are never half-written: every command writes into a temporary folder beside its
output and moves it into place only when the work succeeded."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tickettune.core.errors import UserError


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to touch an output directory that already holds something, unless told to."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} is a file, not a directory; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output directory {out} already holds results; pass --overwrite to replace them or choose another -o")


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False, keep_on_error: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; move it into place only when the block succeeds.

    So `out` is always absent, the previous complete result, or the new complete result.
    With `keep_on_error` the temporary directory survives a failure (training keeps its
    checkpoints there so that `--resume` can continue).
    """
    out = Path(out)
    check_output_dir(out, overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {parent}: {exc.strerror}; choose a writable -o") from exc
    if keep_on_error:
        tmp = partial_dir(out)
        tmp.mkdir(exist_ok=True)
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
    except BaseException:
        if not keep_on_error:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = parent / f".{out.name}.old"
    try:
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
    except OSError:  # e.g. another process put its own `out` in place meanwhile: leave no temporary folder behind
        if not keep_on_error:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def partial_dir(out: Path) -> Path:
    """Where an unfinished training run keeps its work (checkpoints) until it completes."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"
