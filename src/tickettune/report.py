"""Show results: the comparison table in the terminal and as Markdown."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

ROWS = (
    ("Spearman", "spearman"),
    ("Pearson", "pearson"),
    ("ROC-AUC", "roc_auc"),
    ("Average precision", "average_precision"),
    ("F1 (CV)", "f1_cv"),
    ("Precision (CV)", "precision_cv"),
    ("Recall (CV)", "recall_cv"),
    ("Accuracy (CV)", "accuracy_cv"),
    ("Deployable threshold", "threshold"),
    ("Pairs", "n_pairs"),
)
CI_KEYS = {"spearman": "spearman_ci95", "roc_auc": "roc_auc_ci95", "f1_cv": "f1_ci95"}


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_change(result: dict[str, Any], key: str) -> str:
    change = result.get("change", {})
    if key not in change:
        return ""
    delta = change[key]
    if delta is None or math.isnan(delta):
        return "n/a"
    text = f"{delta:+.4f}"
    pct = change.get(f"{key}_pct")
    if pct is not None and not math.isnan(pct):
        text += f" ({pct:+.1f}%)"
    ci = change.get(CI_KEYS.get(key, ""))
    if ci and not any(v is None or math.isnan(v) for v in ci):
        text += f"  95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]"
    return text


def _cell(result: dict[str, Any], side: str, key: str) -> str:
    metrics = result.get(side, {})
    text = fmt(metrics.get(key))
    if key == "f1_cv" and metrics.get("f1_cv_std") is not None and not math.isnan(metrics["f1_cv_std"]):
        text += f" ± {metrics['f1_cv_std']:.4f}"
    return text


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    has_base = "baseline" in result
    rows = []
    for title, key in ROWS:
        row = [title]
        if has_base:
            row.append(_cell(result, "baseline", key))
        row.append(_cell(result, "model", key))
        if has_base:
            row.append(fmt_change(result, key) if key not in ("threshold", "n_pairs") else "")
        rows.append(row)
    return rows


def table_header(result: dict[str, Any], model_title: str = "Fine-tuned") -> list[str]:
    if "baseline" in result:
        return ["Metric", "Baseline", model_title, "Change (vs baseline)"]
    return ["Metric", model_title]


def metric_table(result: dict[str, Any], title: str = "", model_title: str = "Fine-tuned") -> Table:
    table = Table(title=title or None, show_lines=False)
    for i, name in enumerate(table_header(result, model_title)):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in table_rows(result):
        table.add_row(*row)
    return table


def markdown_table(result: dict[str, Any], model_title: str = "Fine-tuned") -> str:
    header = table_header(result, model_title)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    return "\n".join(lines)
