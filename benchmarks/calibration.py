"""Calibrated tiers on held-out tickets: does the duplicate tier hold its target precision where it was not fitted?

Each result's calibrated precision gives its tier (duplicate where it reaches the target); the figure held to
the target is the precision of the tier's lowest-scoring quarter on the test tickets, where the curve promises
the target itself (the tier as a whole is promised more, and its precision is shown beside what was promised).

For each data set, the tickets are split as `tickettune pairs` / `train --tickets` split them
(pairs.split_tickets, seed 0): the tiers are fitted on the eval tickets and measured on the test tickets,
exactly what `train` writes into OUT/model/calibration.json (calibration.calibrate_model). Each set is
searched within itself (every ticket the corpus, every ticket with another of its group a query, its top 10
the results), so a capped set is capped on both sides alike (`--max-tickets`, whole groups drawn).

Data sets: the built-in sample (`--sample` tickets, grouped by problem_id), the shared IT service tickets
(text, topic_group) and the duplicate-bug files (text, problem_id), when ../shared/data has them. Model: the
untuned all-MiniLM-L6-v2 by default (a tuned model folder works the same: `--model OUT/model`).

    python benchmarks/calibration.py                        # appends to RESULTS.md
    python benchmarks/calibration.py --sample 1000 --only sample --no-record
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_under  # noqa: E402
from tickettune.core.models import load_model  # noqa: E402
from tickettune.core.similarity import encode_texts  # noqa: E402
from tickettune.data.pairs import SPLITS, PairOptions, Tickets, split_tickets  # noqa: E402
from tickettune.evaluation.calibration import TIERS, calibrate, halves  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def capped(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` tickets, a seeded sample (every group keeps its share, as in the whole set)."""
    if len(frame) <= limit:
        return frame
    return frame.iloc[np.sort(np.random.default_rng(seed).choice(len(frame), limit, replace=False))]


def held_out(frame: pd.DataFrame, seed: int, limit: int) -> dict[str, pd.DataFrame]:
    """The eval and test tickets of the split `train --tickets` makes, cut to the same size (at most `limit`): the
    results of a search depend on how many tickets it searches, so fit and measure search alike."""
    split, _, _ = split_tickets(Tickets(frame), PairOptions(seed=seed), np.random.default_rng(seed))
    frame = frame.reset_index(drop=True)
    sets = {name: frame[split == i] for i, name in enumerate(SPLITS) if name != "train"}
    size = min(limit, *(len(s) for s in sets.values()))
    return {name: capped(s, size, seed) for name, s in sets.items()}


def group_halves(frame: pd.DataFrame, seed: int, limit: int) -> dict[str, pd.DataFrame]:
    """For data no model here trained on: half the groups to fit on, the other half to measure on."""
    first, second = halves(frame["group"], seed)
    frame = frame.reset_index(drop=True)
    return {"eval": capped(frame.iloc[first], limit, seed), "test": capped(frame.iloc[second], limit, seed)}


def datasets(args) -> dict[str, tuple[pd.DataFrame, str]]:
    """Each data set's tickets (text, group) and how it is held out: `split` (eval/test of train's split) or `halves`."""
    from tickettune.data.sample import generate_sample
    from tickettune.data.tickets import read_tickets

    out = {}
    if "sample" in args.only:
        folder = Path(args.work)
        folder.mkdir(parents=True, exist_ok=True)
        generate_sample(args.sample, 0).to_csv(folder / "sample.csv", index=False)
        for group in ("problem_id", "assignment_group"):
            out[f"built-in sample ({args.sample} tickets, {group})"] = (read_tickets(folder / "sample.csv",
                                                                                    group_by=group).frame, "split")
    if "it" in args.only and (SHARED / "it-service-tickets" / "tickets.csv.gz").is_file():
        out["IT service tickets (topic_group)"] = (read_tickets(SHARED / "it-service-tickets" / "tickets.csv.gz",
                                                                ["text"], "topic_group").frame, "split")
    if "bugs" in args.only:
        bugs = []
        for path in sorted((SHARED / "bug-duplicates").glob("*.csv")):
            frame = read_tickets(path, ["text"], "problem_id").frame
            out[f"{path.stem} duplicate bugs (problem_id)"] = (frame, "halves")
            bugs.append(frame.assign(group=path.stem + ":" + frame["group"].astype(str))[["text", "group"]])
        if bugs:
            out["all four bug files pooled"] = (pd.concat(bugs, ignore_index=True), "halves")
    return out


def interval(got: dict) -> str:
    """Wilson 95% interval of a tier's precision (scipy's binomtest), from its results and their hits."""
    from scipy.stats import binomtest

    if not got["results"]:
        return ""
    low, high = binomtest(round(got["precision"] * got["results"]), got["results"]).proportion_ci(method="wilson")
    return f"[{low:.2f}, {high:.2f}]"


def verdict(got: dict, target: float) -> str:
    """Whether the tier held its promise on the test tickets: the precision of its lowest-scoring quarter (where
    the curve says "the target") within 0.05 of the target; no tier at all is a refusal, not a miss."""
    if got["threshold"] is None:
        return "no tier (the fit tickets do not back it)"
    edge = got["edge"]["precision"]
    if math.isnan(edge):
        return "no test result in the tier"
    return "yes" if abs(edge - target) <= 0.05 else f"no ({edge - target:+.3f})"


def fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--sample", type=int, default=3000, help="built-in sample tickets")
    parser.add_argument("--max-tickets", type=int, default=2500, help="eval and test tickets kept per set (whole groups)")
    parser.add_argument("--duplicate", type=float, default=0.9)
    parser.add_argument("--related", type=float, default=0.6)
    parser.add_argument("--only", nargs="+", default=["sample", "it", "bugs"], choices=["sample", "it", "bugs"])
    parser.add_argument("--work", default="/tmp/tickettune-calibration")
    parser.add_argument("--confidence", type=float, default=0.95, help="the curve's one-sided lower bound; 0: the "
                        "isotonic point estimate (what the bound costs and buys)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    model = load_model(args.model, args.max_seq_length)
    targets = {"duplicate": args.duplicate, "related": args.related}
    rows = []
    for name, (frame, how) in datasets(args).items():
        started = time.perf_counter()
        sets = (held_out if how == "split" else group_halves)(frame, args.seed, args.max_tickets)
        texts = sorted({t for tickets in sets.values() for t in tickets["text"]})
        vectors = encode_texts(model, texts, show_progress=False)
        pieces = {part: (np.stack([vectors[t] for t in tickets["text"]]), list(tickets["group"]))
                  for part, tickets in sets.items()}
        calibration = calibrate(pieces["eval"], pieces["test"], targets=targets, queries=None, seed=args.seed,
                                confidence=args.confidence or None)
        seen = calibration.measured
        row = {"data": name, "held out": "eval / test of the split" if how == "split" else "halves of the groups",
               "fit / measure tickets": f"{len(sets['eval'])} / {len(sets['test'])}", "queries": seen["queries"]}
        for tier in TIERS:
            got, edge = seen[tier], seen[tier]["edge"]
            row[f"{tier} threshold"] = fmt(got["threshold"])
            row[f"{tier} precision [95% CI] (promised)"] = f"{fmt(got['precision'])} {interval(got)} ({fmt(got['promised'])})"
            row[f"{tier} lowest quarter [95% CI] (promised)"] = (f"{fmt(edge['precision'])} {interval(edge)} "
                                                                 f"({fmt(edge['promised'])})")
            row[f"{tier} recall"] = fmt(got["recall"])
            row[f"{tier} results"] = got["results"]
        row["duplicate: lowest quarter within ±0.05 of target"] = verdict(seen["duplicate"], targets["duplicate"])
        rows.append(row)
        print(f"{name}: {row} ({time.perf_counter() - started:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = header + "".join("| " + " | ".join(str(v) for v in r) + " |\n" for r in table.itertuples(index=False))
    notes = (f"\nModel `{args.model}` (max_seq_length {args.max_seq_length}), untuned unless a folder is named. Fitted "
             "on each set's eval tickets and measured on its test tickets (the split `train --tickets` makes, seed "
             f"{args.seed}; both cut to the same size), or, for the bug files, fitted on half the groups and "
             "measured on the other half; every ticket with another of its group is a query and its top 10 are the "
             "results. "
             "A result's calibrated precision (the curve fitted on the fit tickets: "
             + (f"the {args.confidence:.0%} lower bound of the isotonic fit over 200 refits on groups drawn with "
                "replacement" if args.confidence else "the isotonic point estimate (`--confidence 0`)")
             + ", not rising over the top 30 results) "
             "gives its tier: duplicate where it is at least the target. Precision: results in the tier that share "
             "the query's group (Wilson 95% interval), beside the mean calibrated precision of those results "
             "(promised); lowest quarter: the same for the tier's lowest-scoring quarter of results, where the "
             "promise is the target itself, so that is the figure held to ±0.05; recall: the share of the "
             "same-group results among the top 10 that the tier keeps. Each side capped at "
             f"{args.max_tickets} tickets (a seeded sample).\n")
    print(body + notes)
    if not args.no_record:
        append_under("Calibrated tiers", body + notes)


if __name__ == "__main__":
    main()
