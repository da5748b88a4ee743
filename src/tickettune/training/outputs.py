"""What every finished training run writes, whatever trained (the encoder in run.py, a head in head_training.py).

    OUT/model/            the tuned model (sentence-transformers files and model card; a LoRA adapter, or the
                          encoder with a head), written by the caller's save_model
    OUT/config.yaml       the resolved configuration
    OUT/training_log.json loss and eval metrics per step (or head epoch), phase boundaries
    OUT/training_log.csv  the same per step, one row each
    OUT/metrics.json      tuned vs untuned on each held-out set ({"retrieval": {"model", "baseline", "change"},
                          "probe:NAME": ..., "representative": ..., "hard": ...})
    OUT/report.md, .html  tables, curves and examples

Everything is written into a temporary folder and moved into place at the end (errors.atomic_output_dir).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.files import atomic_output_dir
from tickettune.core.jsonio import write_json
from tickettune.evaluation.calibration import Calibration, calibrate_model, calibration_lines
from tickettune.evaluation.judge import TestSets
from tickettune.evaluation.report import fmt, markdown_tables, training_report, write_report
from tickettune.training.checkpoints import CHECKPOINTS, RUN_FILE
from tickettune.training.config import TrainConfig, dump_config
from tickettune.training.dataset import TrainingData
from tickettune.training.feedback_pairs import feedback_change
from tickettune.training.trainer import say, write_training_log


@dataclass
class TrainResult:
    """What `train` returns: where it wrote, the test comparison, and the training log."""

    out: Path
    metrics: dict[str, Any]
    log: dict[str, Any]
    config: TrainConfig
    files: list[str] = field(default_factory=list)
    # The tuned model's cosine per pair of each test pair set, and its metrics per retrieval query, for comparing
    # runs pair by pair and query by query.
    test_scores: dict[str, Any] = field(default_factory=dict)


def card_section(config: TrainConfig, log: dict[str, Any], metrics: dict[str, Any], source: str = "") -> str:
    """The tickettune part of the model card: recipe, curriculum phases (or head epochs), best eval step and test
    results."""
    best = log["best"]
    lines = ["", "## Training with tickettune", "", f"- **Base model:** `{config.model_name}`"]
    if log.get("stage") == "head":
        lines += [f"- **Method:** the encoder frozen; a linear head (Dense + Normalize) trained on its vectors of "
                  f"{log['budget']['train_tickets']:,} train tickets ({log['label_kind']} labels), lr {config.head_lr:g}, "
                  f"batch {config.head_batch_size}, max_seq_length {config.max_seq_length}, seed {config.seed}",
                  f"- **Budget:** {log['budget']['described']}"]
        lines += [f"- **Tickets:** `{source}`"] if source else []
        lines += [f"- **Kept:** head epoch {best['step']} (eval {log['eval_metric']} {fmt(best['value'])})"
                  + (f", update scale {log['update_scale']['chosen']:g}" if log.get("update_scale") else "")]
    else:
        method = (f"LoRA r={config.lora_r}, alpha={config.lora_alpha:g}, dropout={config.lora_dropout:g}"
                  if config.use_lora else "full fine-tuning (every weight)")
        schedule = "restarting each phase" if config.schedule_per_phase else "one over all phases"
        lines += [f"- **Method:** {method}"]
        lines += [f"- **Pairs:** `{source}`"] if source else []
        lines += [f"- **Loss:** {config.loss}; lr {config.lr:g}, batch {config.batch_size}, {config.scheduler} schedule "
                  f"({schedule}), max_seq_length {config.max_seq_length}, seed {config.seed}",
                  f"- **Restored weights:** {log['restored']} (eval {config.eval_metric} {fmt(best['value'])} at step "
                  f"{best['step']})", "", "| Phase | Steps | Epochs | Pairs |", "|---|---|---:|---:|"]
        lines += [f"| {p['name']} | {p['start_step'] + 1}-{p['end_step']} | {p['epochs']:g} | {p['pairs']} |"
                  for p in log["phases"]]
    lines += ["", "### Tuned vs untuned on held-out data", "", markdown_tables(metrics, level="####"), ""]
    return "\n".join(lines)


def scored_sets(sets) -> str:
    """What the final judgement scores, for the line printed before it."""
    return ", ".join(([f"{len(sets.tickets)} test tickets"] if sets.tickets is not None else [])
                     + [f"{len(frame)} {name} pairs" for name, frame in sets.pairs.items()]
                     + [f"probe {name} ({len(table)} reports)" for name, table in sets.probes.items()])


@dataclass
class RunOutputs:
    """What a finished run writes besides its model: the judged sets and their scores, the log, the recipe line,
    and the rows it trained on (their texts' fingerprints go with the model; the report's data statistics)."""

    config: TrainConfig
    pairs: TrainingData
    sets: TestSets
    metrics: dict[str, Any]
    scores: dict[str, Any]
    log: dict[str, Any]
    recipe: str
    trained: pd.DataFrame
    details: dict[str, str] = field(default_factory=dict)
    calibration: Calibration | None = None  # calibrated tiers, saved beside the model (calibration.json)


def write_run(run: RunOutputs, save_model: Callable[[Path], None], out: Path, overwrite: bool) -> TrainResult:
    """Write OUT atomically: `save_model(folder)` writes folder/model (and anything beside it), then the model card
    section, config.yaml, the training log, metrics.json and the report."""
    config, log = run.config, run.log
    with atomic_output_dir(out, overwrite=overwrite, keep_on_error=True) as folder:
        save_model(folder)
        if run.calibration is not None:
            run.calibration.save(folder / "model")
        with open(folder / "model" / "README.md", "a", encoding="utf-8") as card:
            card.write(card_section(config, log, run.metrics, run.pairs.source))
        dump_config(config.model_copy(update={"output_dir": str(out)}), folder / "config.yaml")
        write_training_log(log, folder)
        write_json(folder / "metrics.json", run.metrics)
        headline = run.sets.headline or ""
        details = {"base model": config.model_name, "recipe": run.recipe, "pairs": run.pairs.source or "-",
                   "test sets": ", ".join(f"{name} ({len(frame)})" for name, frame in
                                          ([("tickets", run.sets.tickets)] if run.sets.tickets is not None else [])
                                          + list(run.sets.pairs.items()) + list(run.sets.probes.items())),
                   "training time": f"{log['train_seconds']:.0f} s ({log['pairs_per_second']:.1f} examples/s)",
                   **run.details}
        if log.get("update_scale"):
            details["update scale"] = f"{log['update_scale']['chosen']:g} (WiSE-FT, chosen on eval {log['eval_metric']})"
        if run.pairs.feedback_note:
            details["feedback"] = run.pairs.feedback_note + (
                f"; {feedback_change(run.sets.pairs['feedback'], run.scores['feedback'])}" if "feedback" in run.scores else "")
        if run.calibration is not None:
            details["calibrated tiers"] = "; ".join(calibration_lines(run.calibration))
        report = training_report(run.metrics, log, run.sets.pairs[headline], run.scores[headline], run.trained,
                                 f"tickettune: {Path(config.model_name).name} fine-tuned vs untuned", details)
        report.calibration = run.calibration
        write_report(folder, report)
        shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
        (folder / RUN_FILE).unlink(missing_ok=True)
        files = sorted(p.name for p in folder.iterdir())
    return TrainResult(out, run.metrics, log, config, files, {name: s["model"] for name, s in run.scores.items()})


def calibrate_run(model, config: TrainConfig, pairs: TrainingData, show: bool) -> Calibration | None:
    """The tuned model's calibrated tiers from the held-out tickets (calibration.py); None without them. `model` is
    anything with SentenceTransformer's `encode` (the head stage passes its cached encoder). A split on which no
    calibration can be fitted (every result of one group) leaves the model without one, with a note."""
    try:
        calibration = calibrate_model(model, pairs.tickets, targets={"duplicate": config.duplicate_precision,
                                                                     "related": config.related_precision},
                                      queries=config.retrieval_queries, seed=config.seed)
    except UserError as exc:
        if show:
            say(f"note: no calibrated tiers ({exc})")
        return None
    if show and calibration is not None:
        for line in calibration_lines(calibration):
            say(f"calibrated {line}")
    return calibration
