"""What every benchmark records beside its figures: the command, the machine and the date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def append(section: str, body: str) -> None:
    """Append one dated run to RESULTS.md under its own heading."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = f"\n### {section} — {stamp}\n\n- command: `{command()}`\n- machine: {machine()}\n\n{body.rstrip()}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEvery figure here was printed by the script and command shown with it.\n")
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(text)
