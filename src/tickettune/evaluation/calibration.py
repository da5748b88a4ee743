"""Calibrated tiers: what a similarity score means as "how often is a result this close the same problem".

A cosine score is retrieval evidence, not a probability, and one threshold on it either floods agents with
false duplicates or misses real ones. So a model folder can carry `calibration.json`: the relation between a
result's score and the chance that it shares the query's group (problem), fitted by isotonic regression
(scikit-learn's IsotonicRegression) on the top-`TOP_K` results of held-out query tickets.

One reading, for the tier and the precision shown beside a result: the curve stored (`precisions` at `scores`)
is a one-sided `CONFIDENCE` lower bound of the isotonic curve, over `BOOTSTRAP` refits on the query groups drawn
with replacement (the groups are what changes from the fit tickets to the ones searched), and it does not rise
over the top `MIN_SUPPORT` fitted results (a precision needs that many results to stand on). A result's
`precision` is that curve at its score, and its tier follows from it:

    duplicate   precision >= `targets["duplicate"]` (default 0.9)
    related     precision >= `targets["related"]` (default 0.6); below it the tier is "none"

`thresholds[tier]` is where the curve (linear between its knots, as isotonic regression predicts) first reaches
the target, so `score >= threshold` and `precision(score) >= target` are the same test; None when the curve
never reaches it: no tier is promised that the fit tickets cannot back. The point estimate of the curve is kept
too (`estimates`, for the report).

The fit is measured where it was not fitted: `measured` holds each tier's precision and recall on other
held-out tickets (recall: the share of same-group results among the top-`TOP_K` that the tier keeps), the mean
precision the curve promised for those results, and the same for the tier's edge (its lowest-scoring quarter,
where the promise is the target itself).

    >>> calibration = Calibration.load("run/model")      # doctest: +SKIP
    >>> calibration.tier(0.83), calibration.precision(0.83)  # doctest: +SKIP
    ('duplicate', 0.93)

Serving reads the curve with numpy alone (`np.interp`), so only fitting needs scikit-learn.
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
CONFIDENCE = 0.95  # the stored curve is this one-sided lower bound of the isotonic fit
BOOTSTRAP = 200  # refits on query groups drawn with replacement, for that bound
MIN_SUPPORT = 30  # the curve does not rise over fewer than this many of the fitted results
GRID = 512  # knots of the stored curve: quantiles of the fitted scores
EDGE = 0.25  # a tier's edge: the lowest-scoring quarter of its results, where the promise is the target
RULE = "pointwise"  # how the thresholds are read from the curve; files without it were fitted otherwise


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

    `thresholds[tier]` is None when the curve never reaches the tier's target precision (the tier is never given).
    """

    scores: list[float]
    precisions: list[float]
    targets: dict[str, float]
    thresholds: dict[str, Optional[float]]
    source: str = ""
    fitted_on: dict[str, int] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    estimates: list[float] = field(default_factory=list)  # the isotonic point estimate at `scores`
    confidence: Optional[float] = None  # the lower bound's level; None: `precisions` is the point estimate
    rule: str = ""  # RULE when the thresholds are read pointwise from `precisions`

    def precision(self, scores) -> np.ndarray:
        """The calibrated chance that a result with each score is the query's problem (isotonic fit, clipped)."""
        return np.interp(np.asarray(scores, dtype=float), self.scores, self.precisions)

    def tier(self, score: float) -> str:
        """The first tier whose target the curve reaches at `score` (the same as `score >= thresholds[tier]`, but
        read from the shown precision itself, so a rounding at the threshold cannot part them)."""
        shown = float(self.precision(score))
        for name in TIERS:
            if self.thresholds.get(name) is not None and shown >= self.targets[name] - 1e-9:
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
        if calibration.rule != RULE:
            # Fitted before tiers were read pointwise: read them from its curve now, so tier and precision agree.
            calibration.thresholds = {tier: crossing(*knots, calibration.targets[tier]) for tier in TIERS}
            calibration.rule = RULE
        return calibration


def crossing(scores: np.ndarray, precisions: np.ndarray, target: float) -> Optional[float]:
    """The lowest score at which the non-decreasing curve through (scores, precisions), linear between its knots as
    np.interp reads it, reaches `target`; None when it never does."""
    scores, precisions = np.asarray(scores, float), np.asarray(precisions, float)
    reached = np.flatnonzero(precisions >= target - 1e-12)
    if not len(reached):
        return None
    i = int(reached[0])
    if i == 0 or precisions[i] <= target:
        return float(scores[i])
    x0, x1, y0, y1 = scores[i - 1], scores[i], precisions[i - 1], precisions[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


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
                    source: str = "", clusters: Optional[Sequence[Any]] = None,
                    confidence: Optional[float] = CONFIDENCE, bootstrap: int = BOOTSTRAP,
                    min_support: int = MIN_SUPPORT, seed: int = 0) -> Calibration:
    """Fit the curve on results' scores and same-group flags, and read each tier's threshold from it.

    `scores` and `same` are (queries, k) arrays, or flat; `clusters` names each query's group (one per row: the
    bootstrap draws whole groups), by default every row (every result, when flat) its own. With `confidence`
    None the curve is the isotonic point estimate; otherwise its one-sided lower bound at that level over
    `bootstrap` refits. Either way it does not rise over the top `min_support` results, and a tier's threshold is
    the lowest score at which it reaches the tier's target (`crossing`).
    """
    from sklearn.isotonic import IsotonicRegression

    targets = check_targets(targets)
    scores, same = np.atleast_2d(np.asarray(scores, float)), np.atleast_2d(np.asarray(same, float))
    groups: Sequence[Any] | np.ndarray
    if clusters is None:
        groups = np.arange(scores.shape[0]) if scores.shape[0] > 1 else np.arange(scores.size)
        if scores.shape[0] == 1:
            scores, same = scores.T, same.T
    else:
        groups = clusters
    codes = pd.factorize(pd.Series(list(groups), dtype=object).astype(str))[0]
    flat_scores, flat_same = scores.ravel(), same.ravel()
    finite = np.isfinite(flat_scores)
    flat_scores, flat_same = flat_scores[finite], flat_same[finite]
    if len(flat_scores) < 2 or flat_same.min() == flat_same.max():
        raise UserError(f"calibration: {len(flat_scores)} results, {int(flat_same.sum())} of the query's group; it needs "
                        "both same-group and other results; use more held-out tickets or a finer --group-by")

    def isotonic(x: np.ndarray, y: np.ndarray):
        return IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)

    point = isotonic(flat_scores, flat_same)
    distinct = np.unique(flat_scores)
    # The knots: every distinct score when few, else quantiles of them; the point fit's own knots always.
    grid = distinct if len(distinct) <= GRID else np.unique(np.concatenate(
        [np.quantile(flat_scores, np.linspace(0, 1, GRID + 1)), point.X_thresholds_]))
    estimate = point.predict(grid)
    curve = estimate
    if confidence is not None:
        rng = np.random.default_rng(seed)
        members = pd.Series(np.arange(len(codes))).groupby(codes).apply(np.asarray).tolist()
        refits = []
        for _ in range(bootstrap):
            rows = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
            x, y = scores[rows].ravel(), same[rows].ravel()
            keep = np.isfinite(x)
            refits.append(isotonic(x[keep], y[keep]).predict(grid))
        # A pointwise quantile of non-decreasing curves is non-decreasing.
        curve = np.quantile(np.stack(refits), 1 - confidence, axis=0)
    if min_support:
        # The top min_support results lie at or above it (all of them, when there are fewer).
        supported = np.sort(flat_scores)[-min(min_support, len(flat_scores))]
        curve = np.minimum(curve, np.interp(supported, grid, curve))
    thresholds = {tier: crossing(grid, curve, targets[tier]) for tier in TIERS}
    return Calibration([float(x) for x in grid], [float(y) for y in curve], targets, thresholds, source,
                       {"results": int(len(flat_scores)), "same_group": int(flat_same.sum()),
                        "groups": int(codes.max() + 1)},
                       estimates=[float(y) for y in estimate], confidence=confidence, rule=RULE)


def measure(calibration: Calibration, scores: np.ndarray, same: np.ndarray) -> dict[str, dict[str, Any]]:
    """Each tier's precision and recall on other results, beside what the curve promised for them.

    The tier is every result at or above its threshold; recall the share of the same-group results (of those
    given) it keeps; `promised` the mean calibrated precision of its results. `edge` is the same for the tier's
    lowest-scoring quarter (at least one result), where the promise is about the target itself."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    out: dict[str, Any] = {}
    for tier in TIERS:
        threshold = calibration.thresholds.get(tier)
        kept = scores >= threshold if threshold is not None else np.zeros_like(same)
        got: dict[str, Any] = {"target": calibration.targets[tier], "threshold": threshold,
               "precision": float(same[kept].mean()) if kept.any() else math.nan,
               "promised": float(calibration.precision(scores[kept]).mean()) if kept.any() else math.nan,
               "recall": float(same[kept].sum() / max(1, same.sum())), "results": int(kept.sum()),
               "queries_with_one": int(kept.reshape(len(kept), -1).any(axis=1).sum()) if kept.ndim == 2 else None}
        edge: dict[str, Any] = {"precision": math.nan, "promised": math.nan, "results": 0, "scores": None}
        if kept.any():
            tier_scores, tier_same = scores[kept], same[kept]
            lowest = np.argsort(tier_scores, kind="stable")[:max(1, int(round(EDGE * len(tier_scores))))]
            edge = {"precision": float(tier_same[lowest].mean()),
                    "promised": float(calibration.precision(tier_scores[lowest]).mean()), "results": len(lowest),
                    "scores": [float(tier_scores[lowest].min()), float(tier_scores[lowest].max())]}
        got["edge"] = edge
        out[tier] = got
    out["results"] = int(scores.size)
    out["queries"] = int(len(scores))
    return out


def calibrate(fit: tuple[np.ndarray, Sequence[Any]], check: Optional[tuple[np.ndarray, Sequence[Any]]] = None, *,
              targets: dict[str, float] = DEFAULT_TARGETS, source: str = "", queries: Optional[int] = 2000,
              seed: int = 0, **fit_options) -> Calibration:
    """Fit on one held-out ticket set (unit vectors, groups) and measure on another when given; `fit_options` go to
    fit_calibration (confidence, bootstrap, min_support).

    Each set is searched within itself, as `evaluate --tickets` searches: every ticket is the corpus, a
    ticket whose group has another member is a query.
    """
    from tickettune.evaluation.retrieval import query_rows

    vectors, groups = fit
    rows = query_rows(groups, queries, seed)
    calibration = fit_calibration(*top_results(vectors, groups, rows)[:2], targets=targets, source=source,
                                  clusters=[groups[i] for i in rows], seed=seed, **fit_options)
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
        bound = "" if calibration.confidence is None else f", {calibration.confidence:.0%} lower bound"
        line = (f"{tier}: score >= {threshold:.3f} (target precision {calibration.targets[tier]:.2f}{bound})"
                if threshold is not None else
                f"{tier}: no score reaches precision {calibration.targets[tier]:.2f}{bound}; the tier is not given")
        seen = calibration.measured.get(tier)
        if seen and seen["results"]:
            line += (f"; held out: precision {seen['precision']:.3f} (promised {seen['promised']:.3f}), recall "
                     f"{seen['recall']:.3f} of the same-group results in the top {TOP_K} ({seen['results']} results)")
            edge = seen.get("edge")
            if edge and edge["results"]:
                line += f"; its lowest quarter {edge['precision']:.3f} (promised {edge['promised']:.3f})"
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
