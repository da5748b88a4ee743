"""The report's figures, each a PNG as bytes: ROC and PR curves, score histograms, and the training curve."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from tickettune.core.similarity import binary

COLOURS = {"baseline": "#8c8c8c", "model": "#1f6fb4"}
NAMES = {"baseline": "baseline (untuned)", "model": "fine-tuned"}


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def roc_pr_curves(labels: np.ndarray, scores: dict[str, np.ndarray]) -> bytes:
    """ROC (left) and precision-recall (right) curves of every model in `scores` on the same pairs."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt, fig, ax = _figure(10, 4)
    fig.clear()
    left, right = fig.subplots(1, 2)
    y = binary(labels)
    for key, values in scores.items():
        fpr, tpr, _ = roc_curve(y, values)
        left.plot(fpr, tpr, color=COLOURS[key], label=f"{NAMES[key]} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(y, values)
        right.plot(recall, precision, color=COLOURS[key], label=NAMES[key])
    left.plot([0, 1], [0, 1], ls=":", color="black", lw=0.8)
    right.axhline(y.mean(), ls=":", color="black", lw=0.8, label=f"chance ({y.mean():.2f})")
    left.set(title="ROC", xlabel="false-positive rate", ylabel="true-positive rate")
    right.set(title="Precision-recall", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    return _png(plt, fig)


def score_histograms(labels: np.ndarray, scores: dict[str, np.ndarray], thresholds: dict[str, float]) -> bytes:
    """Cosine scores of similar and dissimilar pairs, one panel per model, deployable threshold marked."""
    plt, fig, _ = _figure(5 * len(scores), 3.6)
    fig.clear()
    axes = np.atleast_1d(fig.subplots(1, len(scores), sharey=True))
    y = binary(labels)
    bins = np.linspace(min(v.min() for v in scores.values()), max(v.max() for v in scores.values()), 40)
    for axis, (key, values) in zip(axes, scores.items()):
        axis.hist(values[y == 1], bins=bins, alpha=0.6, color="#2a9d55", label="similar pairs")
        axis.hist(values[y == 0], bins=bins, alpha=0.6, color="#d1495b", label="dissimilar pairs")
        threshold = thresholds.get(key)
        if threshold is not None and np.isfinite(threshold):
            axis.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.3f}")
        axis.set(title=NAMES[key], xlabel="cosine similarity")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0].set_ylabel("pairs")
    return _png(plt, fig)


def training_curve(steps: Sequence[dict[str, Any]], metric: str, boundaries: Sequence[dict[str, Any]]) -> bytes:
    """Training loss and eval metric by step; each curriculum phase shaded and named."""
    plt, fig, ax = _figure(10, 3.8)
    name = metric.removeprefix("eval_")
    loss = [(s["step"], s["loss"]) for s in steps if s.get("loss") is not None]
    evals = [(s["step"], s[metric]) for s in steps if s.get(metric) is not None]
    start = 0
    for i, boundary in enumerate(boundaries):
        ax.axvspan(start, boundary["end_step"], color="#000000", alpha=0.05 if i % 2 else 0.0)
        ax.annotate(f"{boundary['phase']} phase", ((start + boundary["end_step"]) / 2, 0.97),
                    xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=9, color="#444")
        ax.axvline(boundary["end_step"], color="black", ls=":", lw=1)
        start = boundary["end_step"]
    if loss:
        ax.plot(*zip(*loss), color="#1f6fb4", lw=1, label="training loss")
    ax.set(xlabel="step", ylabel="training loss")
    ax.legend(loc="lower left", fontsize=8)
    if evals:
        twin = ax.twinx()
        twin.plot(*zip(*evals), color="#e07b00", marker="o", ms=3, label=f"eval {name}")
        twin.set_ylabel(f"eval {name}")
        twin.legend(loc="lower right", fontsize=8)
    return _png(plt, fig)


def calibration_curve(scores: Sequence[float], precisions: Sequence[float], thresholds: dict[str, Any],
                      targets: dict[str, float]) -> bytes:
    """The fitted score-to-precision curve (isotonic), each tier's threshold marked at its target precision."""
    plt, fig, ax = _figure(6.4, 3.8)
    ax.step(scores, precisions, where="post", color=COLOURS["model"], lw=1.5, label="precision at this score (isotonic fit)")
    for tier, colour in (("duplicate", "#d1495b"), ("related", "#e07b00")):
        threshold = thresholds.get(tier)
        if threshold is not None:
            ax.axvline(threshold, color=colour, ls="--", lw=1.2,
                       label=f"{tier} tier: score >= {threshold:.3f} (target precision {targets[tier]:.2f})")
    ax.set(xlabel="cosine similarity of a result", ylabel="same group / problem", ylim=(-0.02, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    return _png(plt, fig)
