import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_curve, precision_recall_fscore_support, roc_auc_score

from tickettune.evaluation.judge import (
    best_f1_threshold,
    compare,
    compute_metrics,
    cv_threshold_metrics,
    paired_bootstrap_ci,
    roc_auc_of,
    spearman_of,
    threshold_metrics,
)
from tickettune.evaluation.report import fmt_change, fmt_ci, markdown_table


def test_best_f1_threshold_worked_by_hand():
    # t=0.35 predicts [0,1,1,1]: tp=2 fp=1 fn=0 -> P=2/3 R=1 F1=0.8, better than t=0.8 (0.667) or t=0.1 (0.667).
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    threshold, f1 = best_f1_threshold(y, s)
    assert threshold == pytest.approx(0.35) and f1 == pytest.approx(0.8)


@pytest.mark.parametrize("seed", range(5))
def test_counted_metrics_equal_scikit_learns(seed):
    # Rounded scores make runs of ties, where a threshold search most easily goes wrong.
    rng = np.random.default_rng(seed)
    labels = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], 300)
    y = (labels >= 0.5).astype(int)
    scores = np.round(y * 0.3 + rng.normal(0, 0.3, 300), 1)
    precision, recall, thresholds = precision_recall_curve(y, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    threshold, best = best_f1_threshold(y, scores)
    assert best == pytest.approx(f1.max())
    assert threshold == pytest.approx(thresholds[np.isclose(f1, f1.max())].min())
    for cut in (threshold, -5.0, 5.0, float(np.median(scores))):
        p, r, f, _ = precision_recall_fscore_support(y, (scores >= cut).astype(int), average="binary", zero_division=0.0)
        assert threshold_metrics(y, scores, cut) == pytest.approx(
            {"f1": f, "precision": p, "recall": r, "accuracy": accuracy_score(y, scores >= cut)})
    assert roc_auc_of(labels, scores) == pytest.approx(roc_auc_score(y, scores))


def test_cv_threshold_worked_by_hand():
    # 5 folds, each holding one positive and one negative. The fold that holds the 0.3 positive
    # learns threshold 0.8 from the rest and misses it (F1 0, accuracy 0.5); the other four learn
    # 0.3 and are perfect. Mean F1 0.8, std 0.4, mean accuracy 0.9.
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.8, 0.8, 0.8, 0.8, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2])
    result = cv_threshold_metrics(y, s, folds=5, seed=123)
    assert result["f1_cv"] == pytest.approx(0.8)
    assert result["f1_cv_std"] == pytest.approx(0.4)
    assert result["precision_cv"] == pytest.approx(0.8)
    assert result["recall_cv"] == pytest.approx(0.8)
    assert result["accuracy_cv"] == pytest.approx(0.9)


def test_cv_needs_both_classes():
    result = cv_threshold_metrics(np.array([1, 1, 1, 0]), np.array([0.1, 0.2, 0.3, 0.4]), folds=5)
    assert math.isnan(result["f1_cv"])


def test_bootstrap_interval_worked_by_hand():
    labels = np.arange(20, dtype=float) / 19
    perfect = labels.copy()
    reversed_ = -labels
    # Every resample with two distinct labels has Spearman +1 for one model and -1 for the other.
    low, high = paired_bootstrap_ci(labels, perfect, reversed_, spearman_of, resamples=200, seed=0)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    low, high = paired_bootstrap_ci(labels, perfect, perfect, spearman_of, resamples=200, seed=0)
    assert low == high == 0.0


def test_bootstrap_interval_is_nan_when_a_resample_leaves_the_metric_undefined():
    # Four pairs, one similar: many resamples hold no similar pair, where ROC-AUC has no value.
    labels = np.array([1.0, 0.0, 0.0, 0.0])
    low, high = paired_bootstrap_ci(labels, np.array([0.9, 0.1, 0.2, 0.3]), np.array([0.1, 0.9, 0.2, 0.3]), roc_auc_of,
                                    resamples=100, seed=0)
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_interval_covers_a_noisy_difference():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400).astype(float)
    better = labels + rng.normal(0, 0.8, 400)
    worse = labels + rng.normal(0, 1.6, 400)
    low, high = paired_bootstrap_ci(labels, better, worse, spearman_of, resamples=1000, seed=0)
    point = spearman_of(labels, better) - spearman_of(labels, worse)
    assert 0 < low < point < high


def test_metrics_and_change_signs():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 1], dtype=float)
    good = labels * 0.5 + np.linspace(0, 0.3, 10)
    bad = np.linspace(0, 1, 10)
    result = compare(labels, good, bad, folds=2, resamples=200)
    assert set(result) == {"model", "baseline", "change"}
    for key in ("spearman", "pearson", "roc_auc", "average_precision", "f1_cv", "f1_cv_std", "precision_cv",
                "recall_cv", "accuracy_cv", "threshold", "n_pairs"):
        assert key in result["model"] and key in result["baseline"]
    assert result["model"]["roc_auc"] == 1.0
    change = result["change"]
    assert change["roc_auc"] == pytest.approx(1.0 - result["baseline"]["roc_auc"])
    assert change["spearman"] > 0 and len(change["spearman_ci95"]) == 2
    text = fmt_change(result, "roc_auc")
    assert text.startswith("+") and text.endswith(f"({change['roc_auc_pct']:+.1f}%)")
    low, high = change["roc_auc_ci95"]
    assert fmt_ci(result, "roc_auc") == f"[{low:+.4f}, {high:+.4f}]"
    reverse = compare(labels, bad, good, folds=2, resamples=200)
    assert fmt_change(reverse, "spearman").startswith("-")
    table = markdown_table(result)
    assert table.splitlines()[0] == "| Metric | Baseline | Fine-tuned | Change | 95% CI of change |"


def test_percent_change_is_relative_to_the_baseline():
    result = {"model": {"spearman": 0.6}, "baseline": {"spearman": 0.5},
              "change": {"spearman": 0.1, "spearman_pct": 20.0, "spearman_ci95": [0.05, 0.15]}}
    assert fmt_change(result, "spearman") == "+0.1000 (+20.0%)"
    assert fmt_ci(result, "spearman") == "[+0.0500, +0.1500]"


def test_compute_metrics_on_one_class_is_nan_not_a_crash():
    metrics = compute_metrics(np.ones(6), np.linspace(0, 1, 6))
    assert math.isnan(metrics["roc_auc"]) and metrics["n_pairs"] == 6


def test_evaluate_model_encodes_each_text_once(tiny_model):
    import pandas as pd

    from tickettune.core.models import load_model
    from tickettune.evaluation.judge import TestSets, evaluate_model

    model = load_model(str(tiny_model))
    calls = []
    original = model.encode

    def counting(texts, **kwargs):
        calls.append(list(texts))
        return original(texts, **kwargs)

    model.encode = counting
    pairs = pd.DataFrame({"text1": ["printer jam", "printer jam", "vpn down", "disk full"],
                          "text2": ["vpn down", "disk full", "disk full", "printer jam"], "label": [0, 1, 0, 1.0]})
    results, scores = evaluate_model(TestSets(pairs={"test": pairs}), "unused", model=model, folds=2, resamples=100)
    assert len(calls) == 1 and sorted(calls[0]) == ["disk full", "printer jam", "vpn down"]
    assert scores["test"]["model"].shape == (4,) and results["test"]["model"]["n_pairs"] == 4
