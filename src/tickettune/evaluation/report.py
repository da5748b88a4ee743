"""Show results: the comparison table in the terminal, and report.md / report.html with figures."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from rich.table import Table

from tickettune.core.similarity import binary
from tickettune.evaluation.probes import is_probe, probe_name

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
SET_TITLES = {
    "retrieval": "Retrieval on held-out tickets",
    "representative": "Representative pairs",
    "test": "Test pairs",
    "hard": "Hard pairs (stress test)",
    "feedback": "Held-out agent feedback (train --feedback)",
}
# Read as a user would: accuracy@k is the share of searches with something relevant to reuse in the top k; recall@k
# (found / all relevant) is only meaningful when groups are small (duplicates), and is kept for those.
RETRIEVAL_ROWS = (
    ("Precision@10 (relevant share of the top 10)", "precision@10"),
    ("MRR@10 (1 / rank of the first relevant)", "mrr@10"),
    ("Accuracy@1 (top result relevant)", "accuracy@1"),
    ("Accuracy@10 (a relevant one in the top 10)", "accuracy@10"),
    ("Recall@10 (share of all relevant in the top 10)", "recall@10"),
    ("nDCG@10", "ndcg@10"),
    ("MAP@100", "map@100"),
    ("Queries", "n_queries"),
    ("Corpus tickets", "n_corpus"),
)
COUNTS = ("threshold", "n_pairs", "n_queries", "n_corpus")
CI_KEYS = {"f1_cv": "f1_ci95"}  # the others are f"{key}_ci95"
# What each set's one-line verdict reads: retrieval is judged on what a search shows, pairs on ranking and order.
HEADLINE_KEYS = {"retrieval": (("precision@10", "precision@10"), ("MRR@10", "mrr@10"))}
PAIR_HEADLINE = (("ROC-AUC", "roc_auc"), ("Spearman", "spearman"))
PROBE_HEADLINE = (("MRR@10", "mrr@10"), ("accuracy@10", "accuracy@10"))  # a filed duplicate first, in the top 10


def set_title(name: str) -> str:
    """A set's heading: SET_TITLES, or for a same-problem probe its file's name."""
    if is_probe(name):
        return f"Same-problem probe: {probe_name(name)} (filed duplicates)"
    return SET_TITLES.get(name, name)


def headline_keys(name: str) -> tuple[tuple[str, str], ...]:
    return PROBE_HEADLINE if is_probe(name) else HEADLINE_KEYS.get(name, PAIR_HEADLINE)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_change(result: dict[str, Any], key: str) -> str:
    """Absolute change and, in brackets, change relative to the baseline."""
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
    return text


def fmt_ci(result: dict[str, Any], key: str) -> str:
    """The paired-bootstrap 95% interval of the change, where one was computed."""
    ci = result.get("change", {}).get(CI_KEYS.get(key, f"{key}_ci95"))
    if not ci or any(v is None or math.isnan(v) for v in ci):
        return ""
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _cell(result: dict[str, Any], side: str, key: str) -> str:
    metrics = result.get(side, {})
    text = fmt(metrics.get(key))
    if key == "f1_cv" and metrics.get("f1_cv_std") is not None and not math.isnan(metrics["f1_cv_std"]):
        text += f" ± {metrics['f1_cv_std']:.4f}"
    return text


def is_retrieval(result: dict[str, Any]) -> bool:
    return "mrr@10" in result.get("model", {})


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    has_base = "baseline" in result
    rows = []
    for title, key in RETRIEVAL_ROWS if is_retrieval(result) else ROWS:
        row = [title]
        if has_base:
            row.append(_cell(result, "baseline", key))
        row.append(_cell(result, "model", key))
        if has_base:
            row += [fmt_change(result, key), fmt_ci(result, key)] if key not in COUNTS else ["", ""]
        rows.append(row)
    return rows


def table_header(result: dict[str, Any], model_title: str = "Fine-tuned") -> list[str]:
    if "baseline" in result:
        return ["Metric", "Baseline", model_title, "Change", "95% CI of change"]
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


def results_tables(results: dict[str, dict[str, Any]], model_title: str = "Fine-tuned", about: str = "") -> list[Table]:
    """One table per set of a `judge` result, in its order (retrieval, representative pairs, ..., hard pairs last)."""
    return [metric_table(result, title=set_title(name) + about, model_title=model_title)
            for name, result in results.items()]


def markdown_tables(results: dict[str, dict[str, Any]], model_title: str = "Fine-tuned", level: str = "###") -> str:
    return "\n\n".join(f"{level} {set_title(name)}\n\n{markdown_table(result, model_title)}"
                        for name, result in results.items())


def verdict(results: dict[str, dict[str, Any]]) -> str:
    """One honest sentence per set: did each headline metric's change clear its 95% interval?"""
    sentences = []
    for name, result in results.items():
        if "change" not in result:
            continue
        parts = []
        for title, key in headline_keys(name):
            delta = result["change"].get(key)
            ci = result["change"].get(CI_KEYS.get(key, f"{key}_ci95")) or [math.nan, math.nan]
            if delta is None or math.isnan(delta) or any(v is None or math.isnan(v) for v in ci):
                continue
            word = "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "not distinguishable"
            parts.append(f"{title} {word} ({delta:+.4f}, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}])")
        if parts:
            sentences.append(f"{set_title(name)}: the fine-tuned model is " + "; ".join(parts) + ".")
    return " ".join(sentences)


def _rank(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values) / len(values)


def pair_examples(pairs: pd.DataFrame, labels: np.ndarray, scores: dict[str, np.ndarray], n: int = 5) -> dict[str, pd.DataFrame]:
    """Pairs the fine-tuning helped most and hurt most, comparing score ranks (the models' scales differ)."""
    if "baseline" not in scores:
        return {}
    sign = np.where(np.asarray(labels) >= 0.5, 1.0, -1.0)
    gain = (_rank(scores["model"]) - _rank(scores["baseline"])) * sign
    table = pd.DataFrame({"text 1": pairs["text1"].to_numpy(), "text 2": pairs["text2"].to_numpy(),
                          "label": np.asarray(labels, float), "baseline": scores["baseline"], "fine-tuned": scores["model"],
                          "gain": gain})
    order = np.argsort(-gain, kind="stable")
    return {"helped most": table.iloc[order[:n]], "hurt most": table.iloc[order[::-1][:n]]}


@dataclass
class ReportInputs:
    """Everything a report shows; only `result` is required."""

    results: dict[str, dict[str, Any]]  # by set name, as `evaluate.judge` returns them
    title: str = "tickettune report"
    labels: Optional[np.ndarray] = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: Optional[pd.DataFrame] = None
    training_steps: list[dict[str, Any]] = field(default_factory=list)
    phase_boundaries: list[dict[str, Any]] = field(default_factory=list)
    eval_metric: str = "eval_spearman"
    data_stats: Optional[pd.DataFrame] = None
    details: dict[str, Any] = field(default_factory=dict)
    calibration: Optional[Any] = None  # a calibration.Calibration: its curve is drawn with both tier thresholds


def _figures(inputs: ReportInputs) -> dict[str, tuple[str, bytes]]:
    from tickettune.evaluation import plots

    figures: dict[str, tuple[str, bytes]] = {}
    if inputs.labels is not None and inputs.scores:
        name, headline = next(((n, r) for n, r in inputs.results.items() if not is_retrieval(r)), ("pairs", {}))
        about = set_title(name).lower()
        if 0 < binary(inputs.labels).sum() < len(inputs.labels):
            figures["curves"] = (f"ROC and precision-recall curves ({about})",
                                 plots.roc_pr_curves(inputs.labels, inputs.scores))
        thresholds = {k: headline.get(k, {}).get("threshold") for k in inputs.scores}
        figures["histograms"] = (f"Similarity scores of similar and dissimilar pairs ({about}; dashed: deployable "
                                 "threshold)", plots.score_histograms(inputs.labels, inputs.scores, thresholds))
    if inputs.calibration is not None:
        c = inputs.calibration
        figures["calibration"] = ("Calibrated tiers: a result's score and how often it is the query's group (dashed: "
                                  "tier thresholds)", plots.calibration_curve(c.scores, c.precisions, c.thresholds,
                                                                              c.targets))
    if inputs.training_steps:
        figures["training"] = ("Training curve (dotted lines: end of a curriculum phase)",
                               plots.training_curve(inputs.training_steps, inputs.eval_metric, inputs.phase_boundaries))
    return figures


def _frame_markdown(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        text = fmt(value) if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _frame_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="n/a", float_format=fmt)


def _metric_frames(results: dict[str, dict[str, Any]]) -> dict[str, pd.DataFrame]:
    frames = {}
    for name, result in results.items():
        header = table_header(result)
        if "baseline" in result:
            header = ["Metric", "Current (baseline)", "Fine-tuned", "Change", "95% CI of change"]
        frames[set_title(name)] = pd.DataFrame(table_rows(result), columns=header)
    return frames


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1080px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.3em .6em;vertical-align:top}
th{background:#f4f6f8;text-align:left}td{max-width:420px;overflow-wrap:anywhere}
.verdict{background:#eef6ee;border-left:4px solid #2a9d55;padding:.6em 1em}img{max-width:100%}
.meta td{border:none;padding:.1em .6em}"""


def write_report(out: Path, inputs: ReportInputs) -> None:
    """Write OUT/report.md (figures beside it in OUT/figures) and a self-contained OUT/report.html."""
    out = Path(out)
    figures = _figures(inputs)
    examples = pair_examples(inputs.pairs, inputs.labels, inputs.scores) if inputs.pairs is not None and \
        inputs.labels is not None else {}
    metrics = _metric_frames(inputs.results)
    summary = verdict(inputs.results)
    pair_set = next((set_title(n).lower() for n, r in inputs.results.items() if not is_retrieval(r)), "pairs")

    md = [f"# {inputs.title}", ""]
    md += [f"- **{k}**: {v}" for k, v in inputs.details.items()] + [""]
    if summary:
        md += [f"> {summary}", ""]
    for title, frame in metrics.items():
        md += [f"## {title}", "", _frame_markdown(frame), ""]
    if figures:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, (caption, png) in figures.items():
        (out / "figures" / f"{name}.png").write_bytes(png)
        md += [f"## {caption}", "", f"![{caption}](figures/{name}.png)", ""]
    if inputs.data_stats is not None:
        md += ["## Training data per phase", "", _frame_markdown(inputs.data_stats), ""]
    for caption, frame in examples.items():
        md += [f"## {pair_set.capitalize()} the fine-tuning {caption}", "", _frame_markdown(frame), ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(inputs.title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(inputs.title)}</h1>"]
    if inputs.details:
        parts.append("<table class='meta'>" + "".join(
            f"<tr><td><b>{html.escape(str(k))}</b></td><td>{html.escape(str(v))}</td></tr>" for k, v in inputs.details.items())
            + "</table>")
    if summary:
        parts.append(f"<p class='verdict'>{html.escape(summary)}</p>")
    parts += [f"<h2>{html.escape(title)}</h2>" + _frame_html(frame) for title, frame in metrics.items()]
    for caption, png in figures.values():
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>")
    if inputs.data_stats is not None:
        parts.append("<h2>Training data per phase</h2>" + _frame_html(inputs.data_stats))
    for caption, frame in examples.items():
        parts.append(f"<h2>{html.escape(pair_set.capitalize())} the fine-tuning {html.escape(caption)}</h2>"
                     + _frame_html(frame))
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts), encoding="utf-8")


def phase_statistics(train_pairs: pd.DataFrame, phases: list[dict[str, Any]]) -> pd.DataFrame:
    """Per curriculum phase: pairs by label (or group-loss rows and groups), text length, and its steps and epochs."""
    rows = []
    pairs = "text1" in train_pairs
    texts = [c for c in ("text1", "text2", "text", "anchor", "positive") if c in train_pairs]
    for phase in phases:
        part = train_pairs[train_pairs["phase"] == phase["name"]] if "phase" in train_pairs else train_pairs
        words = pd.concat([part[c] for c in texts]).str.split().str.len()
        counts = {"similar pairs": int((part["label"] >= 0.5).sum()), "dissimilar pairs": int((part["label"] < 0.5).sum())} \
            if pairs else {"rows": len(part), "groups": int(part["label"].nunique()) if "label" in part else len(part)}
        row = {"phase": phase["name"], **counts, "mean words per text": float(words.mean()),
               "epochs": phase["epochs"], "steps": f"{phase['start_step'] + 1}-{phase['end_step']}"}
        if "difficulty" in part:
            row["mean difficulty"] = float(part["difficulty"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def training_report(results: dict[str, dict[str, Any]], log: dict[str, Any], test_pairs: pd.DataFrame,
                    scores: dict[str, np.ndarray], train_pairs: pd.DataFrame, title: str,
                    details: dict[str, Any]) -> ReportInputs:
    """The report of a training run: every test set's comparison, curves and examples of the headline pair set
    (`test_pairs` and its `scores`), the training curve with phases, and per-phase data."""
    metric = f"eval_{log['eval_metric']}"
    steps = list(log["steps"]) + [{"step": e["step"], metric: e[log["eval_metric"]]} for e in log["evals"]]
    boundaries = [{"phase": p["name"], "end_step": p["end_step"]} for p in log["phases"]]
    return ReportInputs(results, title, test_pairs["label"].to_numpy(float), scores, test_pairs,
                        sorted(steps, key=lambda s: s["step"]), boundaries, metric,
                        phase_statistics(train_pairs, log["phases"]), details)
