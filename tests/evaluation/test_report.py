import base64
import re

import numpy as np
import pandas as pd

from tickettune.cli import main
from tickettune.evaluation.judge import compare
from tickettune.evaluation.report import ReportInputs, verdict, write_report
from tickettune.evaluation.retrieval import RETRIEVAL_KEYS, compare_retrieval


def _inputs():
    rng = np.random.default_rng(0)
    labels = np.array([1.0, 0.0] * 30)
    scores = {"model": labels * 0.4 + rng.normal(0.3, 0.1, 60), "baseline": labels * 0.1 + rng.normal(0.4, 0.1, 60)}
    texts = [f"ticket {i} <script>alert('x{i}')</script> & more" for i in range(60)]
    pairs = pd.DataFrame({"text1": texts, "text2": list(reversed(texts)), "label": labels})
    result = compare(labels, scores["model"], scores["baseline"], folds=3, resamples=200)
    per_query = {key: rng.random(40) for key in RETRIEVAL_KEYS}
    retrieval = compare_retrieval(per_query, {key: values * 0.9 for key, values in per_query.items()}, corpus=80,
                                  resamples=200)
    results = {"retrieval": retrieval, "representative": result, "hard": result}
    steps = [{"step": s, "loss": 1 / s, "eval_spearman": 0.5 + s / 100 if s % 5 == 0 else None} for s in range(1, 21)]
    boundaries = [{"phase": "easy", "end_step": 7}, {"phase": "medium", "end_step": 14}, {"phase": "hard", "end_step": 20}]
    stats = pd.DataFrame({"phase": ["easy", "hard <b>"], "pairs": [10, 10]})
    return ReportInputs(results, "report <title>", labels, scores, pairs, steps, boundaries, "eval_spearman", stats,
                        {"model": "m<i>"})


def test_report_embeds_every_figure_and_escapes_ticket_text(tmp_path):
    write_report(tmp_path, _inputs())
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(" in page
    assert "<b>" not in page.replace("<b>model</b>", "") and "report &lt;title&gt;" in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "Current (baseline)" in page and "95% CI of change" in page
    # Retrieval leads, representative pairs follow, the hard pairs come last as the stress test.
    order = [page.index(f"<h2>{title}</h2>") for title in ("Retrieval on held-out tickets", "Representative pairs",
                                                         "Hard pairs (stress test)")]
    assert order == sorted(order) and "Precision@10" in page and "MRR@10" in page
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.count("](figures/") == 3 and all((tmp_path / "figures" / f"{n}.png").is_file()
                                                     for n in ("curves", "histograms", "training"))


def test_verdict_only_claims_what_the_interval_shows():
    pairs = {"model": {}, "baseline": {}, "change": {"roc_auc": 0.1, "roc_auc_ci95": [0.05, 0.15], "spearman": 0.01,
                                                     "spearman_ci95": [-0.02, 0.04]}}
    search = {"model": {}, "baseline": {}, "change": {"precision@10": -0.04, "precision@10_ci95": [-0.05, -0.03],
                                                      "mrr@10": 0.01, "mrr@10_ci95": [-0.01, 0.03]}}
    text = verdict({"retrieval": search, "hard": pairs})
    assert text.startswith("Retrieval on held-out tickets: the fine-tuned model is precision@10 worse (-0.0400")
    assert "MRR@10 not distinguishable" in text
    assert "Hard pairs (stress test): the fine-tuned model is ROC-AUC better (+0.1000" in text
    assert "Spearman not distinguishable" in text


def test_evaluate_writes_a_report_directory(tmp_path, tiny_model):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("\n".join(
        '{"text1": "%s <script>x</script>", "text2": "b %d", "label": %d}' % (f"t{i}", i, i % 2) for i in range(12)))
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(tiny_model), "--baseline", str(tiny_model), "--pairs", str(pairs), "-o", str(out),
                 "--folds", "2", "--resamples", "100"]) == 0
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "report.html", "figures"}
    assert "<script>x" not in (out / "report.html").read_text()
    assert main(["evaluate", "--model", str(tiny_model), "--pairs", str(pairs), "-o", str(out)]) == 2
