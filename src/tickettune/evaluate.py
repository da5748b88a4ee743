"""Score pairs with a model and compare it with a baseline: correlation, ranking, and a deployable threshold.

Labels >= similarity.SIMILAR (0.5) count as similar for the binary metrics. The F1 threshold is chosen by k-fold
cross-validation so that the reported F1 is not measured on the pairs that picked it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, rankdata, spearmanr
from sklearn.metrics import average_precision_score

from .errors import UserError
from .retrieval import compare_retrieval, corpus_metrics, query_rows
from .similarity import binary, encode_texts, pair_cosines

METRIC_KEYS = ("spearman", "pearson", "roc_auc", "average_precision", "f1_cv", "f1_cv_std", "precision_cv",
               "recall_cv", "accuracy_cv", "threshold", "n_pairs")


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The score threshold (predict similar when score >= threshold) with the highest F1, and that F1; among
    equally good thresholds, the lowest."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    positives = int(y.sum())
    if positives == 0:
        return float("inf"), 0.0
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    true_positives = np.cumsum(y[order])
    # Cutting below the i-th highest score predicts i+1 pairs similar; F1 = 2 TP / (predicted + positives).
    f1 = 2 * true_positives / (np.arange(1, len(ranked) + 1) + positives)
    f1[:-1][ranked[1:] == ranked[:-1]] = -1.0  # a cut inside a run of tied scores is not a threshold
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return float(ranked[best]), float(f1[best])


def _classification(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = scores >= threshold
    tp = float(np.sum(predicted & (y == 1)))
    fp = float(np.sum(predicted & (y == 0)))
    fn = float(np.sum(~predicted & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": float(np.mean(predicted == (y == 1)))}


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per pair: each class shuffled and dealt round the folds, so every fold holds both classes."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        members = np.flatnonzero(y == label)
        fold[rng.permutation(members)] = np.arange(len(members)) % folds
    return fold


def cv_threshold_metrics(y: np.ndarray, scores: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Choose the F1-best threshold on k-1 folds, score the held-out fold; mean and std over folds."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    folds = min(folds, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        return dict.fromkeys(("f1_cv", "f1_cv_std", "precision_cv", "recall_cv", "accuracy_cv"), math.nan)
    fold = stratified_folds(y, folds, seed)
    results = []
    for held in range(folds):
        fit = fold != held
        threshold, _ = best_f1_threshold(y[fit], scores[fit])
        results.append(_classification(y[~fit], scores[~fit], threshold))
    f1 = np.array([r["f1"] for r in results])
    return {"f1_cv": float(f1.mean()), "f1_cv_std": float(f1.std()),
            **{f"{key}_cv": float(np.mean([r[key] for r in results])) for key in ("precision", "recall", "accuracy")}}


def _safe(fn: Callable[[], float]) -> float:
    try:
        value = float(fn())
    except ValueError:
        return math.nan
    return value


def spearman_of(labels: np.ndarray, scores: np.ndarray) -> float:
    if np.ptp(labels) == 0 or np.ptp(scores) == 0:
        return math.nan
    return float(spearmanr(labels, scores).statistic)


def roc_auc_of(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half): sklearn's value, fast enough to bootstrap."""
    y = binary(labels)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def compute_metrics(labels: np.ndarray, scores: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Every metric of one model on one set of pairs (keys: METRIC_KEYS)."""
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    y = binary(labels)
    both_classes = 0 < y.sum() < len(y)
    pearson = math.nan if np.ptp(labels) == 0 or np.ptp(scores) == 0 else float(pearsonr(labels, scores).statistic)
    metrics: dict[str, float] = {
        "spearman": spearman_of(labels, scores),
        "pearson": pearson,
        "roc_auc": roc_auc_of(labels, scores),
        "average_precision": _safe(lambda: average_precision_score(y, scores)) if both_classes else math.nan,
    }
    metrics.update(cv_threshold_metrics(y, scores, folds, seed))
    metrics["threshold"] = best_f1_threshold(y, scores)[0] if both_classes else math.nan
    metrics["n_pairs"] = int(len(labels))
    return metrics


def paired_bootstrap_ci(labels: np.ndarray, scores_model: np.ndarray, scores_base: np.ndarray,
                        metric: Callable[[np.ndarray, np.ndarray], float], resamples: int = 1000,
                        seed: int = 0) -> tuple[float, float]:
    """95% interval of metric(model) - metric(base), resampling the same pairs for both models."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    deltas = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        deltas.append(metric(labels[idx], scores_model[idx]) - metric(labels[idx], scores_base[idx]))
    deltas = np.asarray(deltas, dtype=float)
    deltas = deltas[~np.isnan(deltas)]
    if len(deltas) == 0:
        return math.nan, math.nan
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


def compare(labels: np.ndarray, scores_model: np.ndarray, scores_base: np.ndarray | None, folds: int = 5,
            resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The `{"model", "baseline", "change"}` result that `evaluate --json` writes."""
    labels = np.asarray(labels, dtype=float)
    result: dict[str, Any] = {"model": compute_metrics(labels, scores_model, folds, seed)}
    if scores_base is None:
        return result
    result["baseline"] = compute_metrics(labels, scores_base, folds, seed)
    change: dict[str, Any] = {}
    for key in ("spearman", "pearson", "roc_auc", "average_precision", "f1_cv"):
        new, old = result["model"][key], result["baseline"][key]
        change[key] = new - old
        change[f"{key}_pct"] = (new - old) / abs(old) * 100 if old else math.nan
    change["spearman_ci95"] = list(paired_bootstrap_ci(labels, scores_model, scores_base, spearman_of, resamples, seed))
    change["roc_auc_ci95"] = list(paired_bootstrap_ci(labels, scores_model, scores_base, roc_auc_of, resamples, seed))
    # The same k-fold procedure on each resample (same folds for both models), so the interval is of the
    # change in the F1 (CV) that the table shows.
    change["f1_ci95"] = list(paired_bootstrap_ci(
        labels, scores_model, scores_base, lambda l, s: cv_threshold_metrics(binary(l), s, folds, seed)["f1_cv"],
        resamples, seed))
    result["change"] = change
    return result


def evaluate_pairs(pairs: pd.DataFrame, model_name: str, baseline_name: str | None = None,
                   max_seq_length: int | None = None, folds: int = 5, resamples: int = 1000, seed: int = 0,
                   batch_size: int = 64, model=None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Load the model (and baseline), score the pairs once each, and compare. Also returns the raw scores."""
    results, scores = evaluate_model(TestSets(pairs={"test": pairs}), model_name, baseline_name, max_seq_length,
                                     folds=folds, resamples=resamples, seed=seed, batch_size=batch_size, model=model)
    return results["test"], scores["test"]


# The sets a model is judged on, in the order they are shown: what search does first, the stress test last.
SET_ORDER = ("retrieval", "representative", "test", "hard")


@dataclass
class TestSets:
    """What a model is judged on: held-out tickets for retrieval, and pair sets by name in SET_ORDER.

    `tickets` has `text` and `group` columns: every ticket is the corpus, tickets whose group has another member
    are queries, the other members of its group are what it should find. Pair sets are `representative` (drawn
    uniformly), `test` (a pair file of unknown make) and `hard` (lexically hard pairs: a stress test).
    """

    tickets: pd.DataFrame | None = None
    pairs: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pairs = {name: self.pairs[name] for name in SET_ORDER if name in self.pairs}

    def frames(self) -> list[pd.DataFrame]:
        """Every set's table (pair sets, then the tickets): what a leakage check reads."""
        return list(self.pairs.values()) + ([] if self.tickets is None else [self.tickets])

    @property
    def headline(self) -> str | None:
        """The pair set whose threshold search uses and whose curves the report draws: the first one."""
        return next(iter(self.pairs), None)


def retrieval_scores(vectors: dict[str, np.ndarray], tickets: pd.DataFrame, queries: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query retrieval metrics over the ticket corpus (queries are corpus rows), from each text's unit vector
    (as `encode_texts` returns them)."""
    return corpus_metrics(np.stack([vectors[t] for t in tickets["text"]]), list(tickets["group"]), queries)


def texts_of(pairs: list[pd.DataFrame], tickets: pd.DataFrame | None) -> list[str]:
    """Every text of some pair sets and a ticket table: the test tickets and their pairs share most of them, so one
    `encode_texts` call over this list encodes each once."""
    return [t for frame in pairs for t in (*frame["text1"], *frame["text2"])] + \
        ([] if tickets is None else list(tickets["text"]))


def judge(model, baseline, sets: TestSets, queries: int | None = 1000, folds: int = 5, resamples: int = 1000,
          seed: int = 0, batch_size: int = 64, show_progress: bool = False
          ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Score `model` (and `baseline`, loaded models or None) on every set; returns each set's
    `{"model", "baseline", "change"}` result by name (retrieval first) and the raw scores behind them by set and
    side: each pair's cosine, and for retrieval each query's metrics (for comparing runs query by query)."""
    results: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    texts = texts_of(list(sets.pairs.values()), sets.tickets)
    vectors = {side: encode_texts(m, texts, batch_size, show_progress)
               for side, m in (("model", model), ("baseline", baseline)) if m is not None}
    if sets.tickets is not None:
        rows = query_rows(sets.tickets["group"], queries, seed)
        if len(rows):
            per_query = {side: retrieval_scores(v, sets.tickets, rows) for side, v in vectors.items()}
            results["retrieval"] = compare_retrieval(per_query["model"], per_query.get("baseline"), len(sets.tickets),
                                                     resamples, seed)
            scores["retrieval"] = per_query
    for name, pairs in sets.pairs.items():
        scores[name] = {side: pair_cosines(v, pairs) for side, v in vectors.items()}
        results[name] = compare(pairs["label"].to_numpy(float), scores[name]["model"], scores[name].get("baseline"),
                                folds, resamples, seed)
    return results, scores


def test_sets_from(pairs: str | Path | None = None, tickets: pd.DataFrame | None = None) -> TestSets:
    """The sets `evaluate` judges on: a pair file (its pairs), a `tickettune pairs` directory (representative and
    hard pairs, and its test tickets), and/or a ticket table (text, group) for retrieval, which takes precedence
    over the directory's tickets."""
    from .pairs_io import pair_file, read_pair_dir_extras, read_pairs
    from .retrieval import check_retrieval_tickets

    if pairs is None and tickets is None:
        raise UserError("nothing to evaluate on; pass --pairs FILE|DIR and/or --tickets FILE --group-by COLUMN")
    sets: dict[str, pd.DataFrame] = {}
    folder_tickets = None
    if pairs is not None:
        test = read_pairs(pair_file(pairs, "test"))
        if Path(pairs).is_dir():
            representative, split_tickets, name = read_pair_dir_extras(Path(pairs))
            sets[name] = test
            if representative is not None:
                sets["representative"] = representative
            folder_tickets = split_tickets.get("test")
        else:
            sets["test"] = test
    tickets = tickets if tickets is not None else folder_tickets
    if tickets is not None:
        check_retrieval_tickets(tickets["group"], "the test tickets")
    return TestSets(tickets, sets)


def evaluate_model(sets: TestSets, model_name: str, baseline_name: str | None = None, max_seq_length: int | None = None,
                   queries: int | None = 1000, folds: int = 5, resamples: int = 1000, seed: int = 0,
                   batch_size: int = 64, model=None, show_progress: bool = False):
    """Load the model (and baseline) and `judge` them on the sets: each set's comparison and the raw scores.

        >>> from tickettune.evaluate import evaluate_model, test_sets_from
        >>> results, _ = evaluate_model(test_sets_from("pairs/"), "run/model", "all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> list(results)                                                                          # doctest: +SKIP
        ['retrieval', 'representative', 'hard']
    """
    from .models import load_model

    model = model if model is not None else load_model(model_name, max_seq_length)
    base = load_model(baseline_name, max_seq_length) if baseline_name else None
    return judge(model, base, sets, queries, folds, resamples, seed, batch_size, show_progress)


def run_evaluation(model: str, pairs: str | Path | None, tickets: str | Path | None, group_by: str | None,
                   text_columns: Sequence[str] | None, baseline: str | None, max_seq_length: int | None,
                   queries: int | None, folds: int, resamples: int, seed: int, out: Path | None, overwrite: bool,
                   train_pairs: str | Path | None, allow_leakage: bool, say=print) -> dict[str, dict[str, Any]]:
    """The `evaluate` command: read the sets, refuse leaked test texts, judge, and write OUT's report when asked."""
    from .errors import atomic_output_dir, check_output_dir
    from .jsonio import write_json
    from .leakage import guard_evaluation
    from .report import ReportInputs, write_report

    if out is not None:
        check_output_dir(out, overwrite)
    if tickets is None and (group_by or text_columns):
        raise UserError("--group-by and --text-column describe a --tickets file; pass --tickets FILE too")
    table = None
    if tickets is not None:
        from .tickets import read_tickets

        table = read_tickets(tickets, text_columns, group_by)[["text", "group"]]
    sets = test_sets_from(pairs, table)
    if not allow_leakage:
        say(guard_evaluation(model, pd.concat(sets.frames(), ignore_index=True), train_pairs), style="dim")
    results, scores = evaluate_model(sets, model, baseline, max_seq_length, queries, folds, resamples, seed)
    if out is not None:
        headline = sets.headline
        with atomic_output_dir(out, overwrite) as tmp:
            write_json(tmp / "metrics.json", results)
            details = {"model": model, "baseline": baseline or "none", "pairs": str(pairs or "-"),
                       "tickets searched": "-" if sets.tickets is None else len(sets.tickets)}
            shown = sets.pairs.get(headline) if headline else None
            write_report(tmp, ReportInputs(results, f"tickettune evaluation: {Path(model).name}",
                                           None if shown is None else shown["label"].to_numpy(float),
                                           scores.get(headline, {}), shown, details=details))
    return results
