"""Score pairs with a model and compare it with a baseline: correlation, ranking, and a deployable threshold.

Labels >= similarity.SIMILAR (0.5) count as similar for the binary metrics. The F1 threshold is chosen by k-fold
cross-validation (scikit-learn's StratifiedKFold) so that the reported F1 is not measured on the pairs that picked
it; each change comes with a paired percentile bootstrap interval (scipy.stats.bootstrap).

Why three metrics are counted here rather than called from scikit-learn: the F1 interval reruns the whole k-fold
procedure on every resample, 10,000 threshold searches and held-out scorings per pair set, and the ROC-AUC interval
2,000 ROC-AUCs. scikit-learn's input checks cost 1-6 ms a call (precision_recall_curve,
precision_recall_fscore_support, roc_auc_score): comparing two models on 1,000 pairs took 43 s with them instead
of 4 (benchmarks/pair_metrics.py). Turning its parameter validation off does not close the gap (issue 18,
2026-12-06, 2 cores): 26.7 s with `sklearn.config_context(skip_parameter_validation=True)`, 29.5 s without, 3.4 s
here, same figures to 3e-14 (benchmarks/RESULTS.md, "Pair metrics"); the time is in the functions' own work on
each call, not only in the checks. `best_f1_threshold`, `threshold_metrics` and `roc_auc_of` are a few lines of
numpy each, and tests check them against those functions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap, pearsonr, rankdata, spearmanr
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold

from tickettune.core.errors import UserError
from tickettune.core.similarity import binary, encode_texts, pair_cosines
from tickettune.evaluation.retrieval import compare_retrieval, corpus_metrics, query_rows

METRIC_KEYS = ("spearman", "pearson", "roc_auc", "average_precision", "f1_cv", "f1_cv_std", "precision_cv",
               "recall_cv", "accuracy_cv", "threshold", "n_pairs")


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The score threshold (predict similar when score >= threshold) with the highest F1, and that F1; among
    equally good thresholds, the lowest: the best of the F1s that precision_recall_curve's cut points give."""
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


def threshold_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """F1, precision, recall and accuracy of predicting similar when score >= threshold (zero where undefined), as
    precision_recall_fscore_support(average="binary", zero_division=0) and accuracy_score give them."""
    predicted = scores >= threshold
    tp = float(np.sum(predicted & (y == 1)))
    fp = float(np.sum(predicted & (y == 0)))
    fn = float(np.sum(~predicted & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": float(np.mean(predicted == (y == 1)))}


def cv_threshold_metrics(y: np.ndarray, scores: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Choose the F1-best threshold on k-1 folds, score the held-out fold; mean and std over folds."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    folds = min(folds, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        return dict.fromkeys(("f1_cv", "f1_cv_std", "precision_cv", "recall_cv", "accuracy_cv"), math.nan)
    results = []
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(scores, y):
        threshold, _ = best_f1_threshold(y[fit], scores[fit])
        results.append(threshold_metrics(y[held], scores[held], threshold))
    f1 = np.array([r["f1"] for r in results])
    return {"f1_cv": float(f1.mean()), "f1_cv_std": float(f1.std()),
            **{f"{key}_cv": float(np.mean([r[key] for r in results])) for key in ("precision", "recall", "accuracy")}}


def spearman_of(labels: np.ndarray, scores: np.ndarray) -> float:
    if np.ptp(labels) == 0 or np.ptp(scores) == 0:
        return math.nan
    return float(spearmanr(labels, scores).statistic)


def roc_auc_of(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of graded labels (similar when >= SIMILAR) as the Mann-Whitney statistic, ties counting half:
    roc_auc_score's value. NaN when only one class is present."""
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
        "average_precision": float(average_precision_score(y, scores)) if both_classes else math.nan,
    }
    metrics.update(cv_threshold_metrics(y, scores, folds, seed))
    metrics["threshold"] = best_f1_threshold(y, scores)[0] if both_classes else math.nan
    metrics["n_pairs"] = int(len(labels))
    return metrics


def paired_bootstrap_ci(labels: np.ndarray, scores_model: np.ndarray, scores_base: np.ndarray,
                        metric: Callable[[np.ndarray, np.ndarray], float], *, resamples: int = 1000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of metric(model) - metric(base), resampling the same pairs for both models
    (scipy.stats.bootstrap, paired). NaN when some resample leaves the metric undefined (too few pairs of a class)."""
    def change(labels_, model_, base_):
        return metric(labels_, model_) - metric(labels_, base_)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)  # the NaN answer says it
        result = bootstrap((np.asarray(labels), np.asarray(scores_model), np.asarray(scores_base)), change,
                           paired=True, vectorized=False, n_resamples=resamples, method="percentile",
                           random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(labels: np.ndarray, scores_model: np.ndarray, scores_base: np.ndarray | None, *, folds: int = 5,
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
    for key, metric in (("spearman_ci95", spearman_of), ("roc_auc_ci95", roc_auc_of)):
        change[key] = list(paired_bootstrap_ci(labels, scores_model, scores_base, metric, resamples=resamples, seed=seed))
    # The same k-fold procedure on each resample (same folds for both models), so the interval is of the
    # change in the F1 (CV) that the table shows.
    change["f1_ci95"] = list(paired_bootstrap_ci(
        labels, scores_model, scores_base, lambda truth, s: cv_threshold_metrics(binary(truth), s, folds, seed)["f1_cv"],
        resamples=resamples, seed=seed))
    result["change"] = change
    return result


# The sets a model is judged on, in the order they are shown: what search does first, the stress test last.
SET_ORDER = ("retrieval", "representative", "test", "hard", "feedback")


@dataclass
class TestSets:
    """What a model is judged on: held-out tickets for retrieval, and pair sets by name in SET_ORDER.

    `tickets` has `text` and `group` columns: every ticket is the corpus, tickets whose group has another member
    are queries, the other members of its group are what it should find. Pair sets are `representative` (drawn
    uniformly), `test` (a pair file of unknown make) and `hard` (lexically hard pairs: a stress test).
    """

    tickets: pd.DataFrame | None = None
    pairs: dict[str, pd.DataFrame] = field(default_factory=dict)
    probes: dict[str, pd.DataFrame] = field(default_factory=dict)  # same-problem probes (probes.py): name -> text, group

    def __post_init__(self) -> None:
        self.pairs = {name: self.pairs[name] for name in SET_ORDER if name in self.pairs}

    def frames(self) -> list[pd.DataFrame]:
        """Every set's table (pair sets, the tickets, the probes): what a leakage check reads."""
        return list(self.pairs.values()) + ([] if self.tickets is None else [self.tickets]) + list(self.probes.values())

    def texts(self) -> list[str]:
        """Every text of every set, repeats included: one encode call over them encodes each once."""
        return texts_of(list(self.pairs.values()), self.tickets) + [t for p in self.probes.values() for t in p["text"]]

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


def judge(model, baseline, sets: TestSets, *, queries: int | None = 1000, folds: int = 5, resamples: int = 1000,
          seed: int = 0, batch_size: int = 64, show_progress: bool = False
          ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Score `model` (and `baseline`, loaded models or None) on every set; returns each set's
    `{"model", "baseline", "change"}` result by name (retrieval first) and the raw scores behind them by set and
    side: each pair's cosine, and for retrieval each query's metrics (for comparing runs query by query)."""
    from tickettune.evaluation.probes import probe_key

    results: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[str, Any]] = {}
    texts = sets.texts()
    vectors = {side: encode_texts(m, texts, batch_size, show_progress)
               for side, m in (("model", model), ("baseline", baseline)) if m is not None}
    searched = ([("retrieval", sets.tickets, queries)] if sets.tickets is not None else []) + \
        [(probe_key(name), table, None) for name, table in sets.probes.items()]  # a probe's every query counts
    for name, table, limit in searched:
        rows = query_rows(table["group"], limit, seed)
        if len(rows):
            per_query = {side: retrieval_scores(v, table, rows) for side, v in vectors.items()}
            results[name] = compare_retrieval(per_query["model"], per_query.get("baseline"), len(table), resamples, seed)
            scores[name] = per_query
    for name, pairs in sets.pairs.items():
        scores[name] = {side: pair_cosines(v, pairs) for side, v in vectors.items()}
        results[name] = compare(pairs["label"].to_numpy(float), scores[name]["model"], scores[name].get("baseline"),
                                folds=folds, resamples=resamples, seed=seed)
    return results, scores


def test_sets_from(pairs: str | Path | None = None, tickets: pd.DataFrame | None = None,
                   probes: dict[str, pd.DataFrame] | None = None) -> TestSets:
    """The sets `evaluate` judges on: a pair file (its pairs), a `tickettune pairs` directory (representative and
    hard pairs, and its test tickets), and/or a ticket table (text, group) for retrieval, which takes precedence
    over the directory's tickets; and same-problem probes (probes.read_probes)."""
    from tickettune.data.pairs_io import pair_file, read_pair_dir_extras, read_pairs
    from tickettune.evaluation.retrieval import check_retrieval_tickets

    if pairs is None and tickets is None and not probes:
        raise UserError("nothing to evaluate on; pass --pairs FILE|DIR, --tickets FILE --group-by COLUMN and/or "
                        "--probe FILE")
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
    return TestSets(tickets, sets, dict(probes or {}))


def evaluate_model(sets: TestSets, model_name: str, baseline_name: str | None = None, *, max_seq_length: int | None = None,
                   queries: int | None = 1000, folds: int = 5, resamples: int = 1000, seed: int = 0,
                   batch_size: int = 64, model=None, show_progress: bool = False):
    """Load the model (and baseline) and `judge` them on the sets: each set's comparison and the raw scores.

        >>> from tickettune.evaluation.judge import evaluate_model, test_sets_from
        >>> results, _ = evaluate_model(test_sets_from("pairs/"), "run/model", "all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> list(results)                                                                          # doctest: +SKIP
        ['retrieval', 'representative', 'hard']
    """
    from tickettune.core.models import load_model

    model = model if model is not None else load_model(model_name, max_seq_length)
    base = load_model(baseline_name, max_seq_length) if baseline_name else None
    return judge(model, base, sets, queries=queries, folds=folds, resamples=resamples, seed=seed, batch_size=batch_size,
                 show_progress=show_progress)


def run_evaluation(model: str, *, pairs: str | Path | None = None, tickets: str | Path | None = None,
                   group_by: str | None = None, text_columns: Sequence[str] | None = None,
                   probes: Sequence[str | Path] | None = None, probe_groups: Sequence[str] | None = None,
                   baseline: str | None = None, max_seq_length: int | None = None, queries: int | None = 1000,
                   folds: int = 5, resamples: int = 1000, seed: int = 0, out: Path | None = None,
                   overwrite: bool = False, train_pairs: str | Path | None = None, allow_leakage: bool = False,
                   calibrate: dict[str, float] | None = None, say=print) -> dict[str, dict[str, Any]]:
    """The `evaluate` command: read the sets, refuse leaked test texts, judge, and write OUT's report when asked.
    `probes` are same-problem probe files (probes.read_probes; `probe_groups` their duplicate columns); `calibrate`
    (tier -> target precision) fits calibrated tiers on `tickets` and writes them into the model folder."""
    from tickettune.core.files import atomic_output_dir, check_output_dir
    from tickettune.core.jsonio import write_json
    from tickettune.data.leakage import guard_evaluation
    from tickettune.evaluation.report import ReportInputs, write_report

    if out is not None:
        check_output_dir(out, overwrite)
    if tickets is None and (group_by or text_columns):
        raise UserError("--group-by and --text-column describe a --tickets file; pass --tickets FILE too")
    table = None
    if tickets is not None:
        from tickettune.data.tickets import read_tickets

        table = read_tickets(tickets, text_columns, group_by).frame[["text", "group"]]
    from tickettune.evaluation.probes import read_probes

    sets = test_sets_from(pairs, table, read_probes(probes, probe_groups))
    if not allow_leakage:
        say(guard_evaluation(model, pd.concat(sets.frames(), ignore_index=True), train_pairs), style="dim")
    loaded, calibration = None, None
    if calibrate is not None:
        from tickettune.core.models import load_model
        from tickettune.evaluation.calibration import check_targets

        check_targets(calibrate)
        if table is None or not Path(model).expanduser().is_dir():
            raise UserError("--calibrate fits the tiers on --tickets FILE and writes calibration.json into the model "
                            "folder; pass --tickets and a model folder (e.g. OUT/model)")
        loaded = load_model(model, max_seq_length)
    results, scores = evaluate_model(sets, model, baseline, max_seq_length=max_seq_length, queries=queries, folds=folds,
                                     resamples=resamples, seed=seed,
                                     model=loaded)
    if loaded is not None:
        from tickettune.evaluation.calibration import calibrate_model, calibration_lines

        calibration = calibrate_model(loaded, {"test": table}, targets=calibrate or {}, queries=queries, seed=seed)
        if calibration is None:
            raise UserError(f"--calibrate: too few tickets of {tickets} share a group with another to fit the tiers; "
                            "pass more tickets or a coarser --group-by")
        calibration.source = f"{calibration.source} ({tickets})"
        say(f"calibration written to {calibration.save(Path(model).expanduser())}")
        for line in calibration_lines(calibration):
            say(line)
    if out is not None:
        headline = sets.headline
        with atomic_output_dir(out, overwrite) as tmp:
            write_json(tmp / "metrics.json", results)
            details = {"model": model, "baseline": baseline or "none", "pairs": str(pairs or "-"),
                       "tickets searched": "-" if sets.tickets is None else len(sets.tickets),
                       "same-problem probes": ", ".join(f"{n} ({len(t)} reports)" for n, t in sets.probes.items()) or "-"}
            shown = sets.pairs.get(headline) if headline else None
            write_report(tmp, ReportInputs(results, f"tickettune evaluation: {Path(model).name}",
                                           None if shown is None else shown["label"].to_numpy(float),
                                           scores.get(headline, {}), shown, details=details, calibration=calibration))
    return results
