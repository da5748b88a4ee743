"""Calibrated tiers: what a similarity score means as "how often is a result this close the same problem".

A cosine score is retrieval evidence, not a probability, and one threshold on it either floods agents with
false duplicates or misses real ones. So a model folder can carry `calibration.json`: the relation between a
result's score and the chance that it shares the query's group (problem), fitted by isotonic regression
(scikit-learn's IsotonicRegression) on the top-`TOP_K` results of held-out query tickets, and two
thresholds chosen by target precision:

    duplicate   the lowest score at which the results at or above it are same-problem with precision
                `targets["duplicate"]` (default 0.9)
    related     the same for `targets["related"]` (default 0.6); a result below it is tier "none"

The fit is measured where it was not fitted: `measured` holds each tier's precision and recall on other
held-out tickets (recall: the share of same-group results among the top-`TOP_K` that the tier keeps).

    >>> calibration = Calibration.load("run/model")      # doctest: +SKIP
    >>> calibration.tier(0.83), calibration.precision(0.83)  # doctest: +SKIP
    ('duplicate', 0.93)

Serving reads the curve with numpy alone (isotonic regression predicts by linear interpolation between its
knots, which `np.interp` reproduces), so only fitting needs scikit-learn.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError

CALIBRATION_FILE = "calibration.json"
TIERS = ("duplicate", "related")
DEFAULT_TARGETS = {"duplicate": 0.9, "related": 0.6}
TOP_K = 10  # results per query the fit sees: what an agent is shown
CHUNK = 1024


def check_targets(targets: dict[str, float]) -> dict[str, float]:
    """Targets for both tiers, each in (0, 1), the duplicate one at least the related one."""
    if set(targets) != set(TIERS):
        raise UserError(f"calibration targets: expected {' and '.join(TIERS)}, got {', '.join(sorted(targets))}")
    for tier, value in targets.items():
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise UserError(f"{tier}_precision is {value!r}; expected a precision between 0 and 1, e.g. 0.9")
    if targets["duplicate"] < targets["related"]:
        raise UserError(f"duplicate_precision {targets['duplicate']} is below related_precision {targets['related']}; "
                        "a duplicate must be at least as sure as a related ticket")
    return {tier: float(targets[tier]) for tier in TIERS}


@dataclass
class Calibration:
    """The fitted score-to-precision curve (isotonic knots), tier thresholds and how they held up on other tickets.

    `thresholds[tier]` is None when no score reaches the tier's target precision (the tier is never given).
    """

    scores: list[float]
    precisions: list[float]
    targets: dict[str, float]
    thresholds: dict[str, Optional[float]]
    source: str = ""
    fitted_on: dict[str, int] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)

    def precision(self, scores) -> np.ndarray:
        """The calibrated chance that a result with each score is the query's problem (isotonic fit, clipped)."""
        return np.interp(np.asarray(scores, dtype=float), self.scores, self.precisions)

    def tier(self, score: float) -> str:
        for name in TIERS:
            threshold = self.thresholds.get(name)
            if threshold is not None and score >= threshold:
                return name
        return "none"

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Optional["Calibration"]:
        """The calibration in a model folder, or None when it has none; a damaged file is a UserError."""
        path = Path(folder).expanduser() / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            calibration = cls(**json.loads(path.read_text(encoding="utf-8")))
            knots = np.asarray(calibration.scores, float), np.asarray(calibration.precisions, float)
            if len(knots[0]) == 0 or knots[0].shape != knots[1].shape or np.any(np.diff(knots[0]) < 0):
                raise ValueError
        except (OSError, ValueError, TypeError):
            raise UserError(f"{path}: not a readable calibration; delete it, or write it again with `tickettune "
                            "evaluate --tickets FILE --calibrate`") from None
        return calibration


def top_results(vectors: np.ndarray, groups: Sequence[Any], queries: np.ndarray, k: int = TOP_K
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query row's `k` best other tickets: their scores and whether each shares the query's group (both
    (len(queries), k)), and how many same-group tickets each query has in the whole set."""
    codes = pd.factorize(pd.Series(list(groups), dtype=object).astype(str))[0]
    k = min(k, len(vectors) - 1)
    all_scores, all_same = [], []
    for start in range(0, len(queries), CHUNK):
        rows = queries[start:start + CHUNK]
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        all_scores.append(np.take_along_axis(top_scores, order, axis=1))
        all_same.append(codes[np.take_along_axis(top, order, axis=1)] == codes[rows, None])
    relevant = np.bincount(codes)[codes[queries]] - 1
    return np.concatenate(all_scores), np.concatenate(all_same), relevant


def fit_calibration(scores: np.ndarray, same: np.ndarray, targets: dict[str, float] = DEFAULT_TARGETS,
                    source: str = "") -> Calibration:
    """Fit the curve on results' scores and same-group flags, and choose each tier's threshold.

    A tier's threshold is the lowest result score whose results at or above it have the target precision by the
    fitted curve: since the curve rises with the score, their mean fitted precision only falls as the threshold
    is lowered, so the lowest such score keeps the most results at the target.
    """
    from sklearn.isotonic import IsotonicRegression

    targets = check_targets(targets)
    scores, same = np.asarray(scores, float).ravel(), np.asarray(same, float).ravel()
    finite = np.isfinite(scores)
    scores, same = scores[finite], same[finite]
    if len(scores) < 2 or same.min() == same.max():
        raise UserError(f"calibration: {len(scores)} results, {int(same.sum())} of the query's group; it needs both "
                        "same-group and other results; use more held-out tickets or a finer --group-by")
    curve = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(scores, same)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    running = np.cumsum(curve.predict(ranked)) / np.arange(1, len(ranked) + 1)
    thresholds: dict[str, Optional[float]] = {}
    for tier in TIERS:
        # A cut inside a run of tied scores is no threshold: only the last of each run counts.
        ok = (running >= targets[tier] - 1e-12) & np.append(ranked[1:] != ranked[:-1], True)
        thresholds[tier] = float(ranked[np.flatnonzero(ok)[-1]]) if ok.any() else None
    return Calibration([float(x) for x in curve.X_thresholds_], [float(y) for y in curve.y_thresholds_], targets,
                       thresholds, source, {"results": int(len(scores)), "same_group": int(same.sum())})


def measure(calibration: Calibration, scores: np.ndarray, same: np.ndarray) -> dict[str, dict[str, Any]]:
    """Each tier's precision and recall on other results: the tier is every result at or above its threshold,
    recall the share of the same-group results (of those given) it keeps."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    out: dict[str, Any] = {}
    for tier in TIERS:
        threshold = calibration.thresholds.get(tier)
        kept = scores >= threshold if threshold is not None else np.zeros_like(same)
        out[tier] = {"target": calibration.targets[tier], "threshold": threshold,
                     "precision": float(same[kept].mean()) if kept.any() else math.nan,
                     "recall": float(same[kept].sum() / max(1, same.sum())), "results": int(kept.sum()),
                     "queries_with_one": int(kept.reshape(len(kept), -1).any(axis=1).sum()) if kept.ndim == 2 else None}
    out["results"] = int(scores.size)
    out["queries"] = int(len(scores))
    return out


def calibrate(fit: tuple[np.ndarray, Sequence[Any]], check: Optional[tuple[np.ndarray, Sequence[Any]]] = None, *,
              targets: dict[str, float] = DEFAULT_TARGETS, source: str = "", queries: Optional[int] = 2000,
              seed: int = 0) -> Calibration:
    """Fit on one held-out ticket set (unit vectors, groups) and measure on another when given.

    Each set is searched within itself, as `evaluate --tickets` searches: every ticket is the corpus, a
    ticket whose group has another member is a query.
    """
    from tickettune.evaluation.retrieval import query_rows

    vectors, groups = fit
    calibration = fit_calibration(*top_results(vectors, groups, query_rows(groups, queries, seed))[:2],
                                  targets=targets, source=source)
    if check is not None:
        vectors, groups = check
        scores, same, _ = top_results(vectors, groups, query_rows(groups, queries, seed))
        calibration.measured = measure(calibration, scores, same)
    return calibration


def halves(groups: Sequence[Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows split in two by group (a seeded half of the groups each), so no problem is in both halves."""
    names = pd.Series(list(groups), dtype=object).astype(str)
    unique = names.unique()
    chosen = set(np.random.default_rng(seed).permutation(unique)[:len(unique) // 2])
    first = names.isin(chosen).to_numpy()
    return np.flatnonzero(first), np.flatnonzero(~first)


def calibration_lines(calibration: Calibration) -> list[str]:
    """One line per tier: threshold, target and what it measured on held-out tickets."""
    lines = []
    for tier in TIERS:
        threshold = calibration.thresholds.get(tier)
        line = (f"{tier}: score >= {threshold:.3f} (target precision {calibration.targets[tier]:.2f})"
                if threshold is not None else f"{tier}: no score reaches precision {calibration.targets[tier]:.2f}")
        seen = calibration.measured.get(tier)
        if seen and seen["results"]:
            line += (f"; held out: precision {seen['precision']:.3f}, recall {seen['recall']:.3f} of the same-group "
                     f"results in the top {TOP_K} ({seen['results']} results)")
        lines.append(line)
    return lines


def calibrate_model(model, tickets: dict[str, pd.DataFrame], *, targets: dict[str, float] = DEFAULT_TARGETS,
                    queries: Optional[int] = 2000, seed: int = 0) -> Optional[Calibration]:
    """A loaded model's calibration from a split's held-out tickets (tables with text and group): fitted on the
    eval tickets and measured on the test tickets, or fitted and measured on two halves of the groups of the one
    set there is. None when there are no held-out tickets (a run on pair files alone)."""
    from tickettune.core.similarity import encode_texts

    sets = {name: tickets[name] for name in ("eval", "test") if tickets.get(name) is not None and len(tickets[name]) > 2}
    if not sets:
        return None
    texts = sorted({t for frame in sets.values() for t in frame["text"]})
    vectors = encode_texts(model, texts)

    def part(frame: pd.DataFrame, rows=None):
        frame = frame if rows is None else frame.iloc[rows]
        return np.stack([vectors[t] for t in frame["text"]]), list(frame["group"])

    if len(sets) == 2:
        return calibrate(part(sets["eval"]), part(sets["test"]), targets=targets, queries=queries, seed=seed,
                         source="fitted on the eval tickets, measured on the test tickets")
    (name, frame), = sets.items()
    first, second = halves(frame["group"], seed)
    return calibrate(part(frame, first), part(frame, second), targets=targets, queries=queries, seed=seed,
                     source=f"fitted on half the groups of the {name} tickets, measured on the other half")
