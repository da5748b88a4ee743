"""Calibrated tiers on held-out tickets: does the duplicate tier hold its target precision where it was not fitted?

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

from tickettune.calibration import TIERS, calibrate  # noqa: E402
from tickettune.models import load_model  # noqa: E402
from tickettune.pairs import SPLITS, PairOptions, Tickets, split_tickets  # noqa: E402
from tickettune.similarity import encode_texts  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def capped(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most about `limit` tickets, drawn as whole groups (a group's members stay together)."""
    if len(frame) <= limit:
        return frame
    order = np.random.default_rng(seed).permutation(frame["group"].unique())
    sizes = frame.groupby("group").size().loc[order].cumsum()
    return frame[frame["group"].isin(sizes.index[sizes <= limit])]


def held_out(frame: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    split, _, _ = split_tickets(Tickets(frame), PairOptions(seed=seed), np.random.default_rng(seed))
    frame = frame.reset_index(drop=True)
    return {name: frame[split == i] for i, name in enumerate(SPLITS) if name != "train"}


def datasets(args) -> dict[str, pd.DataFrame]:
    from tickettune.sample import generate_sample
    from tickettune.tickets import read_tickets

    out = {}
    if "sample" in args.only:
        folder = Path(args.work)
        folder.mkdir(parents=True, exist_ok=True)
        generate_sample(args.sample, 0).to_csv(folder / "sample.csv", index=False)
        out[f"built-in sample ({args.sample} tickets, problem_id)"] = read_tickets(folder / "sample.csv",
                                                                                 group_by="problem_id")
    if "it" in args.only and (SHARED / "it-service-tickets" / "tickets.csv.gz").is_file():
        out["IT service tickets (topic_group)"] = read_tickets(SHARED / "it-service-tickets" / "tickets.csv.gz",
                                                               ["text"], "topic_group")
    if "bugs" in args.only:
        for path in sorted((SHARED / "bug-duplicates").glob("*.csv")):
            out[f"{path.stem} duplicate bugs (problem_id)"] = read_tickets(path, ["text"], "problem_id")
    return out


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    model = load_model(args.model, args.max_seq_length)
    targets = {"duplicate": args.duplicate, "related": args.related}
    rows = []
    for name, frame in datasets(args).items():
        started = time.perf_counter()
        sets = {part: capped(tickets, args.max_tickets, args.seed) for part, tickets in held_out(frame, args.seed).items()}
        texts = sorted({t for tickets in sets.values() for t in tickets["text"]})
        vectors = encode_texts(model, texts, show_progress=False)
        pieces = {part: (np.stack([vectors[t] for t in tickets["text"]]), list(tickets["group"]))
                  for part, tickets in sets.items()}
        calibration = calibrate(pieces["eval"], pieces["test"], targets=targets, queries=None, seed=args.seed)
        seen = calibration.measured
        row = {"data": name, "eval / test tickets": f"{len(sets['eval'])} / {len(sets['test'])}",
               "test queries": seen["queries"]}
        for tier in TIERS:
            got = seen[tier]
            row[f"{tier} threshold"] = fmt(got["threshold"])
            row[f"{tier} precision (target {targets[tier]:g})"] = fmt(got["precision"])
            row[f"{tier} recall"] = fmt(got["recall"])
            row[f"{tier} results"] = got["results"]
        row["within ±0.05"] = "yes" if not math.isnan(seen["duplicate"]["precision"]) and \
            abs(seen["duplicate"]["precision"] - targets["duplicate"]) <= 0.05 else "no"
        rows.append(row)
        print(f"{name}: {row} ({time.perf_counter() - started:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = header + "".join("| " + " | ".join(str(v) for v in r) + " |\n" for r in table.itertuples(index=False))
    notes = (f"\nModel `{args.model}` (max_seq_length {args.max_seq_length}), untuned unless a folder is named. Fitted "
             "on each set's eval tickets, measured on its test tickets (the split `train --tickets` makes, seed "
             f"{args.seed}); every ticket with another of its group is a query and its top 10 are the results. "
             "Precision: results in the tier that share the query's group; recall: the share of the same-group "
             "results among the top 10 that the tier keeps. Eval and test sets capped at "
             f"{args.max_tickets} tickets each (whole groups).\n")
    print(body + notes)
    if not args.no_record:
        append_under("Calibrated tiers", body + notes)


if __name__ == "__main__":
    main()
