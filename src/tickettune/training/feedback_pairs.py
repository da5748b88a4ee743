"""`train --feedback FILE`: agents' verdicts (`tickettune feedback export`) as labelled pairs beside the tickets.

A confirmed suggestion (duplicate) is a positive pair, a related one a half-similar pair (label 0.5), a
rejected one (unrelated) a hard negative: the model ranked it near the query, and it is not the same problem.
With the encoder stage they join the train pairs in the last curriculum phase (hard), where the confusable
pairs are; with the head stage (the default recipe) they are a pair term of the head's loss on the cached
vectors (head.HeadObjective.feedback_loss: a rejected suggestion pushed below a cosine margin from its query,
a confirmed one pulled towards it; a related one says neither). A seeded
share of the queries (`HELD_OUT`, whole queries, so no query is on both sides) is kept out of training and
judged like any test set ("feedback" in metrics.json and the report): what the feedback changed on verdicts
the model did not learn from.

    >>> pairs, note = add_feedback(load_pairs("pairs/"), Path("feedback.jsonl"), seed=42)  # doctest: +SKIP
    >>> note                                                                              # doctest: +SKIP
    '240 verdicts (96 duplicate, 0 related, 144 unrelated): 192 trained on, 48 held out'
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.data.pairs_io import PHASES, read_pairs
from tickettune.training.loss_registry import loss_spec

HELD_OUT = 0.2
MIN_HELD_OUT_QUERIES = 5  # fewer queries than this on the held-out side judge nothing: all feedback trains


def read_feedback(path: Path) -> pd.DataFrame:
    """The verdicts of a feedback export as a pair table (text1 = query, text2 = suggestion, label)."""
    if not Path(path).is_file():
        raise UserError(f"--feedback {path}: file not found; write it with `tickettune feedback export -o FILE`")
    pairs = read_pairs(path)
    if pairs.empty:
        raise UserError(f"--feedback {path}: holds no verdicts; collect some with POST /feedback first")
    return pairs[["text1", "text2", "label"]]


def split_feedback(feedback: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trained on, held out): a seeded HELD_OUT share of the queries, whole, held out when there are enough."""
    queries = feedback["text1"].unique()
    held = int(round(HELD_OUT * len(queries)))
    if held < MIN_HELD_OUT_QUERIES:
        return feedback, feedback.iloc[:0]
    chosen = set(np.random.default_rng(seed).permutation(queries)[:held])
    out = feedback["text1"].isin(chosen)
    return feedback[~out].reset_index(drop=True), feedback[out].reset_index(drop=True)


def add_feedback(pairs, path: Path, *, seed: int, loss: str, stage: str = "encoder"):
    """TrainingData with the feedback's train share among the train pairs (and as `feedback_train`, for the head
    stage's pair term) and its held-out share as the `feedback` test set; and a line saying what was used."""
    if stage == "encoder" and loss_spec(loss).trains_on == "tickets":
        raise UserError(f"--feedback adds labelled pairs, and loss {loss} trains on tickets and their groups; train "
                        "with a pair loss (e.g. --set loss=cosine) or the head stage (--set stage=head) to learn "
                        "from feedback")
    feedback = read_feedback(path)
    trained, held = split_feedback(feedback, seed)
    rows = trained.copy()
    if "phase" in pairs.train.columns:
        present = [p for p in PHASES if p in set(pairs.train["phase"])]
        rows["phase"] = present[-1] if present else pairs.train["phase"].iloc[0]
    # Other columns (a `negative`) stay empty for these rows: the triplet losses pair a query's rejected
    # suggestion with its confirmed one as they pair any dissimilar pair sharing an anchor.
    train = pd.concat([pairs.train, rows], ignore_index=True)
    counts = {name: int((feedback["label"] == label).sum()) for name, label in
              (("duplicate", 1.0), ("related", 0.5), ("unrelated", 0.0))}
    how = "as the head's pair term" if stage == "head" else "as pairs (hard phase)"
    note = (f"{len(feedback)} verdicts ({', '.join(f'{n} {name}' for name, n in counts.items())}) from {path}: "
            f"{len(trained)} trained on {how}, {len(held)} held out")
    return replace(pairs, train=train, feedback=held if len(held) else None, feedback_note=note,
                   feedback_train=trained), note


def feedback_change(held: pd.DataFrame, scores: dict[str, np.ndarray]) -> str:
    """What training changed on the held-out verdicts: the mean score of rejected and of confirmed suggestions,
    untuned -> tuned (`scores` by side, as `evaluate.judge` gives them)."""
    parts = []
    for name, chosen in (("rejected", held["label"].to_numpy() == 0.0), ("confirmed", held["label"].to_numpy() == 1.0)):
        if chosen.any() and "baseline" in scores:
            parts.append(f"{name} suggestions' mean score {scores['baseline'][chosen].mean():.3f} -> "
                         f"{scores['model'][chosen].mean():.3f} ({int(chosen.sum())})")
    return "held-out verdicts: " + "; ".join(parts) if parts else "no held-out verdicts to judge"
