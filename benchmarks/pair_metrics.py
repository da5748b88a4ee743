"""What the pair metrics cost, and how much of the CV-F1 is the fold draw.

    python benchmarks/pair_metrics.py --record
    python benchmarks/pair_metrics.py --pairs /tmp/pairs --model run/model --baseline all-MiniLM-L6-v2 --record

1. Cost: `evaluate.compare` (every metric of two models on one pair set, with bootstrap intervals of the change)
   as tickettune runs it, and with its three counted pieces (`best_f1_threshold`, `threshold_metrics`,
   `roc_auc_of`) swapped for scikit-learn's precision_recall_curve, precision_recall_fscore_support /
   accuracy_score and roc_auc_score, once as they are and once with their parameter validation off
   (`sklearn.config_context(skip_parameter_validation=True)`). All must give the same figures (the largest
   difference is printed); the time says why judge.py counts those three itself.
2. Fold draw: the F1 (CV) and its change under ten fold seeds. Any change of how folds are dealt (as the move to
   StratifiedKFold was) moves the CV-F1 within this spread and no other figure.

Pairs: synthetic (labels 0/1, cosines = label x separation + noise) unless --pairs names a pair file or a
`tickettune pairs` directory, whose first pair set is scored with --model and --baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
from tickettune.evaluation import judge as evaluate  # noqa: E402


def sklearn_pieces() -> dict:
    """scikit-learn versions of the three counted functions, same signatures and answers."""
    from sklearn.metrics import accuracy_score, precision_recall_curve, precision_recall_fscore_support, roc_auc_score

    def best_f1_threshold(y, scores):
        if not np.asarray(y).any():
            return float("inf"), 0.0
        precision, recall, thresholds = precision_recall_curve(y, scores)
        precision, recall = precision[:-1], recall[:-1]
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                       where=precision + recall > 0)
        best = int(np.argmax(np.round(f1, 12)))
        return float(thresholds[best]), float(f1[best])

    def threshold_metrics(y, scores, threshold):
        predicted = (scores >= threshold).astype(int)
        p, r, f, _ = precision_recall_fscore_support(y, predicted, average="binary", zero_division=0.0)
        return {"f1": float(f), "precision": float(p), "recall": float(r), "accuracy": float(accuracy_score(y, predicted))}

    def roc_auc_of(labels, scores):
        y = evaluate.binary(labels)
        return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")

    return {"best_f1_threshold": best_f1_threshold, "threshold_metrics": threshold_metrics, "roc_auc_of": roc_auc_of}


def flat(result: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        elif isinstance(value, list):
            out.update({f"{prefix}{key}/{i}": float(v) for i, v in enumerate(value)})
        else:
            out[f"{prefix}{key}"] = float(value)
    return out


def scored_pairs(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    if args.pairs is None:
        rng = np.random.default_rng(args.seed)
        labels = rng.integers(0, 2, args.n).astype(float)
        return (labels, labels * 0.3 + rng.normal(0, 0.15, args.n), labels * 0.25 + rng.normal(0, 0.15, args.n),
                f"{args.n} synthetic pairs")
    from tickettune.core.models import load_model

    sets = evaluate.test_sets_from(args.pairs)
    name = sets.headline
    pairs = sets.pairs[name]
    _, scores = evaluate.judge(load_model(args.model), load_model(args.baseline), evaluate.TestSets(None, {name: pairs}),
                               resamples=10)
    about = f"{len(pairs)} {name} pairs of {args.pairs}"
    return pairs["label"].to_numpy(float), scores[name]["model"], scores[name]["baseline"], about


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", help="pair file or `tickettune pairs` directory (default: synthetic pairs)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--baseline", default="all-MiniLM-L6-v2")
    parser.add_argument("--n", type=int, default=1000, help="synthetic pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="append the figures to RESULTS.md")
    args = parser.parse_args()
    labels, model, base, described = scored_pairs(args)

    timings, results = {}, {}
    ours = {name: getattr(evaluate, name) for name in sklearn_pieces()}
    import sklearn

    routes = (("tickettune (counted)", ours, False), ("scikit-learn", sklearn_pieces(), False),
              ("scikit-learn, skip_parameter_validation=True", sklearn_pieces(), True))
    for route, pieces, skip in routes:
        for name, function in pieces.items():
            setattr(evaluate, name, function)
        start = time.perf_counter()
        with sklearn.config_context(skip_parameter_validation=skip):
            results[route] = flat(evaluate.compare(labels, model, base, seed=args.seed))
        timings[route] = time.perf_counter() - start
    for name, function in ours.items():
        setattr(evaluate, name, function)
    a = results[routes[0][0]]
    largest = max(abs(a[k] - other[k]) for other in list(results.values())[1:] for k in a
                  if not (np.isnan(a[k]) and np.isnan(other[k])))

    rows = []
    for seed in range(10):
        m = evaluate.cv_threshold_metrics(evaluate.binary(labels), model, seed=seed)["f1_cv"]
        u = evaluate.cv_threshold_metrics(evaluate.binary(labels), base, seed=seed)["f1_cv"]
        rows.append((seed, m, u, m - u))
    f1s = np.array([r[1] for r in rows])
    changes = np.array([r[3] for r in rows])

    lines = [f"Pairs: {described}; `evaluate.compare` with 1,000 bootstrap resamples.", "",
             "| route | seconds per compare |", "|---|---:|"]
    lines += [f"| {route} | {seconds:.1f} |" for route, seconds in timings.items()]
    lines += ["", f"Largest difference from the counted route over all {len(a)} figures: {largest:.2e}.", "",
              "| fold seed | F1 (CV) model | F1 (CV) baseline | change |", "|---:|---:|---:|---:|"]
    lines += [f"| {s} | {m:.4f} | {u:.4f} | {c:+.4f} |" for s, m, u, c in rows]
    lines += ["", f"Spread over fold seeds: model F1 (CV) {f1s.min():.4f}-{f1s.max():.4f}, change "
              f"{changes.min():+.4f} to {changes.max():+.4f} (std {changes.std():.4f})."]
    body = "\n".join(lines)
    print(body)
    if args.record:
        _results.append_under("Pair metrics", body)


if __name__ == "__main__":
    main()
