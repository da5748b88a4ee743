"""What every benchmark records beside its figures: the command, the machine, the load and the date, under
its topic's `## Heading` in RESULTS.md, beside earlier runs of the same topic."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
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


def append_under(heading: str, body: str, title: str | None = None) -> None:
    """Insert one dated run (command, machine, body) at the end of the `## heading` section, creating it if missing;
    the run's own heading is `title` (default: `heading`) and the time."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    # The cores are shared: the load says how much of them other work took while this ran.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    run = (f"\n### {title or heading} — {stamp}\n\n- command: `{command()}`\n- machine: {machine()}\n"
           f"- load average at the end (1, 5, 15 min): {load}\n\n{body.rstrip()}\n")
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else (
        "# Benchmark results\n\nEvery figure here was printed by the script and command shown with it.\n")
    start = re.search(rf"^## {re.escape(heading)}\s*$", text, flags=re.M)
    if start is None:
        text = text.rstrip("\n") + f"\n\n## {heading}\n" + run
    else:
        after = re.search(r"^## ", text[start.end():], flags=re.M)
        end = start.end() + after.start() if after else len(text)
        text = text[:end].rstrip("\n") + "\n" + run + ("\n" + text[end:] if after else "")
    RESULTS.write_text(text, encoding="utf-8")
