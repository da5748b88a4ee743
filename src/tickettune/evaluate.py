"""Score pairs with a model and compare it with a baseline: correlation, ranking, and a deployable threshold.

Labels >= 0.5 count as similar for the binary metrics. The F1 threshold is chosen by k-fold
cross-validation so that the reported F1 is not measured on the pairs that picked it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.model_selection import StratifiedKFold

METRIC_KEYS = ("spearman", "pearson", "roc_auc", "average_precision", "f1_cv", "f1_cv_std", "precision_cv",
               "recall_cv", "accuracy_cv", "threshold", "n_pairs")


def encode_texts(model, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> dict[str, np.ndarray]:
    """Unit-length embeddings of each distinct text, encoded once (tickets recur across pairs)."""
    unique = sorted(set(texts))
    vectors = model.encode(unique, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=show_progress)
    return dict(zip(unique, vectors))


def pair_scores(model, pairs: pd.DataFrame, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Cosine similarity of each pair's two texts."""
    vectors = encode_texts(model, list(pairs["text1"]) + list(pairs["text2"]), batch_size, show_progress)
    a = np.stack([vectors[t] for t in pairs["text1"]])
    b = np.stack([vectors[t] for t in pairs["text2"]])
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def binary(labels: np.ndarray) -> np.ndarray:
    return (np.asarray(labels, dtype=float) >= 0.5).astype(int)


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The score threshold (predict similar when score >= threshold) with the highest F1, and that F1."""
    if y.sum() == 0:
        return float("inf"), 0.0
    precision, recall, thresholds = precision_recall_curve(y, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    # The last precision/recall point has no threshold (recall 0 by convention).
    best = int(np.argmax(f1[:-1]))
    return float(thresholds[best]), float(f1[best])


def _classification(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = scores >= threshold
    tp = float(np.sum(predicted & (y == 1)))
    fp = float(np.sum(predicted & (y == 0)))
    fn = float(np.sum(~predicted & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": float(np.mean(predicted == (y == 1)))}


def cv_threshold_metrics(y: np.ndarray, scores: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Choose the F1-best threshold on k-1 folds, score the held-out fold; mean and std over folds."""
    nan = {"f1_cv": math.nan, "f1_cv_std": math.nan, "precision_cv": math.nan, "recall_cv": math.nan,
           "accuracy_cv": math.nan}
    folds = min(folds, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        return nan
    results = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(scores.reshape(-1, 1), y):
        threshold, _ = best_f1_threshold(y[fit_idx], scores[fit_idx])
        results.append(_classification(y[held_idx], scores[held_idx], threshold))
    table = pd.DataFrame(results)
    return {"f1_cv": float(table["f1"].mean()), "f1_cv_std": float(table["f1"].std(ddof=0)),
            "precision_cv": float(table["precision"].mean()), "recall_cv": float(table["recall"].mean()),
            "accuracy_cv": float(table["accuracy"].mean())}


def _safe(fn: Callable[[], float]) -> float:
    try:
        value = float(fn())
    except ValueError:
        return math.nan
    return value


def _spearman(labels: np.ndarray, scores: np.ndarray) -> float:
    if np.ptp(labels) == 0 or np.ptp(scores) == 0:
        return math.nan
    return float(spearmanr(labels, scores).statistic)


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    y = binary(labels)
    return _safe(lambda: roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else math.nan


def compute_metrics(labels: np.ndarray, scores: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Every metric of one model on one set of pairs (keys: METRIC_KEYS)."""
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    y = binary(labels)
    both_classes = 0 < y.sum() < len(y)
    pearson = math.nan if np.ptp(labels) == 0 or np.ptp(scores) == 0 else float(pearsonr(labels, scores).statistic)
    metrics: dict[str, float] = {
        "spearman": _spearman(labels, scores),
        "pearson": pearson,
        "roc_auc": _roc_auc(labels, scores),
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
    change["spearman_ci95"] = list(paired_bootstrap_ci(labels, scores_model, scores_base, _spearman, resamples, seed))
    change["roc_auc_ci95"] = list(paired_bootstrap_ci(labels, scores_model, scores_base, _roc_auc, resamples, seed))
    thresholds = (result["model"]["threshold"], result["baseline"]["threshold"])

    # F1 at each model's deployable threshold, resampled on the same pairs.
    rng = np.random.default_rng(seed)
    y = binary(labels)
    deltas = []
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        deltas.append(_classification(y[idx], scores_model[idx], thresholds[0])["f1"]
                      - _classification(y[idx], scores_base[idx], thresholds[1])["f1"])
    change["f1_ci95"] = [float(v) for v in np.percentile(deltas, [2.5, 97.5])] if not any(map(math.isinf, thresholds)) \
        and not any(map(math.isnan, thresholds)) else [math.nan, math.nan]
    result["change"] = change
    return result


def evaluate_pairs(pairs: pd.DataFrame, model_name: str, baseline_name: str | None = None,
                   max_seq_length: int | None = None, folds: int = 5, resamples: int = 1000, seed: int = 0,
                   batch_size: int = 64, model=None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Load the model (and baseline), score the pairs once each, and compare. Also returns the raw scores."""
    from .models import load_model

    model = model if model is not None else load_model(model_name, max_seq_length)
    scores = {"model": pair_scores(model, pairs, batch_size)}
    if baseline_name:
        base = load_model(baseline_name, max_seq_length)
        scores["baseline"] = pair_scores(base, pairs, batch_size)
    result = compare(pairs["label"].to_numpy(float), scores["model"], scores.get("baseline"), folds, resamples, seed)
    return result, scores
