"""An unfinished run's folder: its checkpoints, what it was started with, and whether --resume may continue it.

Training writes checkpoints into `.OUT.partial/checkpoints` and RUN_FILE (the knobs, a hash of the pairs and
the process count) beside them. `prepare_workdir` decides, before any step is trained, whether a request may
start afresh, must say --overwrite, or resumes, and from which checkpoint; damaged checkpoints are named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.textio import table_sha256
from tickettune.training.config import TrainConfig

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"


def run_fingerprint(config: TrainConfig, frame: pd.DataFrame, world_size: int) -> dict[str, Any]:
    """What must not change between a run and its --resume: the knobs, the pairs, the process count."""
    knobs = config.model_dump(exclude={"output_dir", "pairs_dir", "train_file", "eval_file", "test_file"})
    return {"config": knobs, "data_sha256": table_sha256(frame), "world_size": world_size}


def _complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints under folder, newest first; one without trainer_state.json was cut off while being written."""
    numbered = (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit())
    return [p for p in sorted(numbered, key=lambda p: int(p.name.split("-")[-1]), reverse=True)
            if (p / "trainer_state.json").is_file()]


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under folder, checked for damage (UserError if damaged).

    Not transformers' `trainer_utils.get_last_checkpoint` (5.x): it returns the highest-numbered `checkpoint-N`
    folder whether or not its trainer_state.json was written, so a run killed while saving would resume from the
    half-written one (checkpoint-20 without trainer_state.json beside a complete checkpoint-10: it answers 20,
    this 10), and it raises FileNotFoundError where no checkpoints folder exists yet (this: None).
    """
    complete = _complete_checkpoints(folder)
    if not complete:
        return None
    checkpoint = complete[0]
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        from safetensors import safe_open

        weights = list(checkpoint.glob("*.safetensors"))
        if not any(p.name in ("adapter_model.safetensors", "model.safetensors") for p in weights):
            raise ValueError("no model weights")
        for path in weights:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        for required in ("optimizer.pt", "scheduler.pt"):
            if not (checkpoint / required).is_file():
                raise ValueError(f"{required} missing")
    except Exception as exc:  # json, OS and safetensors errors alike mean a damaged checkpoint
        raise UserError(f"checkpoint {checkpoint} is corrupted ({str(exc).splitlines()[0][:80] or type(exc).__name__}); "
                        "delete that folder to resume from the previous checkpoint, or start over with --overwrite") from None
    return checkpoint


def prepare_workdir(work: Path, fingerprint: dict[str, Any], resume: bool, overwrite: bool) -> Path | None:
    """Check the unfinished-run folder against the request; return the checkpoint to resume from (None: fresh start).

    Without --resume a run that saved checkpoints is only discarded with --overwrite; one that saved
    none is simply started again.
    """
    checkpoints = work / CHECKPOINTS
    if not resume:
        if _complete_checkpoints(checkpoints) and not overwrite:
            raise UserError(f"an interrupted run is in {work}; pass --resume to continue it, or --overwrite to start over")
        return None
    if not (work / RUN_FILE).is_file():
        raise UserError(f"nothing to resume: {work} holds no interrupted run; run again without --resume")
    try:
        saved = json.loads((work / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{work / RUN_FILE} is corrupted; start over with --overwrite") from None
    for key in ("data_sha256", "world_size"):
        if saved.get(key) != fingerprint[key]:
            what = "training pairs" if key == "data_sha256" else "number of processes"
            raise UserError(f"--resume with different {what} than the interrupted run; use the same inputs, or --overwrite")
    changed = [k for k, v in fingerprint["config"].items() if saved.get("config", {}).get(k) != v]
    if changed:
        raise UserError(f"--resume with a changed setting '{changed[0]}' ({saved['config'].get(changed[0])!r} -> "
                        f"{fingerprint['config'][changed[0]]!r}); use the same settings, or --overwrite to start over")
    checkpoint = last_checkpoint(checkpoints)
    if checkpoint is None:
        raise UserError(f"the interrupted run in {work} saved no checkpoint yet; run again without --resume")
    return checkpoint
