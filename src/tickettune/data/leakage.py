"""Test texts must not be training texts: the guard `train`, `sweep` and `evaluate` share.

A model folder written by `train` carries fingerprints of its training texts (TRAINING_TEXTS: a short
sha256 of each text, case- and space-normalised; never the text itself), so that `evaluate` can refuse
test pairs the model was trained on even when its training pairs are no longer at hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.textio import normalise_text

TRAINING_TEXTS = "tickettune_training_texts.json"
# Pair tables (text1, text2, negative), ticket tables (text) and group-loss rows (anchor, positive).
TEXT_COLUMNS = ("text1", "text2", "negative", "text", "anchor", "positive")


def fingerprint(text: str) -> str:
    # 16 hex digits: collisions among a few million texts are vanishingly rare, and the file stays small.
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()[:16]


def fingerprints(frame: pd.DataFrame) -> set[str]:
    """Fingerprints of every text in a pair or ticket table (the TEXT_COLUMNS it has)."""
    return {fingerprint(t) for c in TEXT_COLUMNS if c in frame for t in frame[c].dropna()}


def write_training_texts(folder: Path, train: pd.DataFrame) -> None:
    record = {"about": "sha256 (first 16 hex digits) of each training text, lower-cased with runs of white space "
                       "made one space; tickettune evaluate refuses test texts found here",
              "fingerprints": sorted(fingerprints(train))}
    (Path(folder) / TRAINING_TEXTS).write_text(json.dumps(record, indent=0) + "\n", encoding="utf-8")


def read_training_texts(model_folder: Path) -> set[str] | None:
    """The training-text fingerprints stored beside a model, or None when it has none (not trained by tickettune)."""
    path = Path(model_folder) / TRAINING_TEXTS
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))["fingerprints"]
        if not isinstance(values, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise UserError(f"{path} is not a training-text fingerprint file; delete it, or pass --allow-leakage") from None
    return {str(v) for v in values}


def refuse_leaked_texts(training: set[str], test: pd.DataFrame, action: str, where: str = "the training pairs") -> None:
    """Refuse when a test text's fingerprint is among `training`; `action` is what --allow-leakage lets happen."""
    texts = sorted({t for c in TEXT_COLUMNS if c in test for t in test[c].dropna()})
    leaked = [t for t in texts if fingerprint(t) in training]
    if leaked:
        example = leaked[0] if len(leaked[0]) <= 60 else leaked[0][:57] + "..."
        raise UserError(f"{len(leaked)} of {len(texts)} test texts also appear in {where} (e.g. {example!r}); "
                        f"split the data so they do not, or pass --allow-leakage to {action} anyway")


def guard_evaluation(model: str, test: pd.DataFrame, train_pairs: str | Path | None = None) -> str:
    """Refuse test pairs that `model` was trained on: checked against `train_pairs` (a pair file or a `pairs`
    directory) when given, else against the fingerprints `train` stored in the model folder. Returns what was
    checked, in words."""
    if train_pairs is not None:
        from tickettune.data.pairs_io import pair_file, read_pairs

        source = pair_file(train_pairs, "train")
        refuse_leaked_texts(fingerprints(read_pairs(source)), test, "evaluate", f"the training pairs {source}")
        return f"leakage: no test text is in {source}"
    from tickettune.core.models import resolve_model

    stored = read_training_texts(resolve_model(model))
    if stored is None:
        return "leakage: not checked (the model folder holds no training-text fingerprints; pass --train-pairs)"
    refuse_leaked_texts(stored, test, "evaluate", "the model's training pairs")
    return "leakage: no test text is among the model's training texts"
