"""The `tickettune` command: a thin layer over the pipeline modules. Every user error exits 2 with one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

try:  # typer >= 0.20 vendors its own click; older versions use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune sentence-embedding models on IT tickets with LoRA and curriculum learning.")
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command()
def presets() -> None:
    """Print the built-in recipes side by side."""
    from .config import PRESET_NOTES, PRESETS, TrainConfig

    configs = {name: TrainConfig(**values) for name, values in PRESETS.items()}
    keys = ["lr", "phase_epochs", "warmup_steps", "warmup_ratio", "batch_size", "max_seq_length", "lora_r", "lora_alpha",
            "lora_dropout", "loss", "weight_decay", "scheduler", "eval_subset", "use_lora"]
    table = Table(title="tickettune presets (every other knob: `tickettune train --help`)")
    table.add_column("knob")
    for name in configs:
        table.add_column(name, justify="right")
    table.add_row("", *[f"[dim]{PRESET_NOTES[name]}[/dim]" for name in configs])
    for key in keys:
        values = [getattr(c, key) for c in configs.values()]
        shown = ["all" if key == "eval_subset" and v is None else ("-" if v is None else
                 "/".join(f"{e:g}" for e in v) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v))
                 for v in values]
        table.add_row(key, *shown)
    console.print(table)


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="model folder or id to evaluate"),
    pairs: Path = typer.Option(..., "--pairs", "-p", help="pair file, or a directory from `tickettune pairs` (its test set)"),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="model to compare against"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON here"),
    max_seq_length: Optional[int] = typer.Option(None, help="tokens kept per text (model's own when unset)"),
    folds: int = typer.Option(5, help="cross-validation folds for the F1 threshold", min=2),
    resamples: int = typer.Option(1000, help="paired bootstrap resamples", min=100),
    seed: int = typer.Option(0, help="seed of folds and bootstrap"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write metrics.json, report.md and report.html here"),
    overwrite: bool = typer.Option(False, help="replace an existing --json file or --out directory"),
) -> None:
    """Score a model (and a baseline) on pairs: Spearman, ROC-AUC, CV-F1, bootstrap intervals."""
    from .errors import atomic_output_dir, check_output_dir
    from .evaluate import evaluate_pairs
    from .jsonio import write_json
    from .pairs_io import pair_file, read_pairs
    from .report import ReportInputs, metric_table, write_report

    if json_path is not None and json_path.exists() and not overwrite:
        raise UserError(f"{json_path} already exists; pass --overwrite to replace it or choose another --json")
    if out is not None:
        check_output_dir(out, overwrite)
    source = pair_file(pairs, "test")
    frame = read_pairs(source)
    with console.status(f"encoding {len(frame)} pairs"):
        result, scores = evaluate_pairs(frame, model, baseline, max_seq_length, folds, resamples, seed)
    console.print(metric_table(result, title=f"{model} on {pairs}", model_title="Model" if not baseline else "Fine-tuned"))
    if json_path is not None:
        write_json(json_path, result)
        console.print(f"metrics written to {json_path}")
    if out is not None:
        with atomic_output_dir(out, overwrite) as tmp:
            write_json(tmp / "metrics.json", result)
            details = {"model": model, "baseline": baseline or "none", "pairs": str(source), "pairs scored": len(frame)}
            write_report(tmp, ReportInputs(result, f"tickettune evaluation: {Path(model).name}", frame["label"].to_numpy(float),
                                           scores, frame, details=details))
        console.print(f"report written to {out / 'report.html'}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    from .models import offline_environment

    offline_environment()
    try:
        code = app(args=args, prog_name="tickettune", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.NoArgsIsHelpError:
        return 0  # typer has already printed the help
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "tickettune"
        err_console.print(f"error: {_one_line(exc.format_message())} (see `{command} --help`)", markup=False)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("error: interrupted; nothing half-written was left (training resumes with --resume)", markup=False)
        return 2
    except click_exceptions.ClickException as exc:
        err_console.print(f"error: {_one_line(exc.format_message())}", markup=False)
        return 2
    except UserError as exc:
        if debug:
            raise
        err_console.print(f"error: {_one_line(exc)}", markup=False)
        return 2
    except OSError as exc:
        if debug:
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        err_console.print(f"error: cannot write or read{where}: {exc.strerror or exc}; free disk space or fix permissions",
                          markup=False)
        return 2
    except MemoryError:
        err_console.print("error: out of memory; lower --set batch_size or max_seq_length", markup=False)
        return 2
    except Exception as exc:  # last resort: still one line, never a traceback unless --debug
        if debug:
            raise
        err_console.print(f"error: {type(exc).__name__}: {_one_line(exc)[:300]} (rerun with --debug for the traceback)",
                          markup=False)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
