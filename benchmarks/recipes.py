"""Which recipe makes search better? Group losses, pair losses and the seed's presets, judged by what users deploy.

    python benchmarks/recipes.py                         # IT tickets, the sample and STSb; about an hour on 2 CPU cores
    python benchmarks/recipes.py --datasets sample --grid all   # every recipe, the seed presets included

Every run trains the same base model with the same seed on the same split and is judged, against the untuned
model on the same held-out data, first on retrieval (each held-out ticket whose group has another member
searches all held-out tickets: precision@10, MRR@10), then on representative test pairs (drawn uniformly, none
mined), then on the lexically hard test pairs, a stress test. Each change comes with a paired bootstrap 95%
interval (over queries, over pairs). Each ticket-tuned model is also scored on the STS Benchmark test set, so a
recipe that trades general similarity for the ticket labels shows it. Each dataset's tables are printed and
appended to benchmarks/RESULTS.md (command, machine, load, date) as soon as it is done.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402

from tickettune.config import resolve_config  # noqa: E402
from tickettune.evaluate import paired_bootstrap_ci, roc_auc_of, spearman_of  # noqa: E402
from tickettune.similarity import pair_scores  # noqa: E402
from tickettune.models import load_model  # noqa: E402
from tickettune.pairs import PairOptions, build_pairs  # noqa: E402
from tickettune.pairs_io import read_pairs  # noqa: E402
from tickettune.retrieval import mean_difference_ci  # noqa: E402
from tickettune.sample import generate_sample  # noqa: E402
from tickettune.tickets import read_tickets  # noqa: E402
from tickettune.train import train  # noqa: E402
from tickettune.training_data import TrainingPairs, from_pairset  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
console = Console(highlight=False, width=200)  # wide tables stay readable in a log file


@dataclass(frozen=True)
class Recipe:
    """One row: a preset plus the knobs that make it differ."""

    name: str
    preset: str
    sets: tuple[str, ...] = ()
    kind: str = "group"  # "group": trains on tickets; "pairs": on pairs; "seed": a seed preset (pairs)


OWN = Recipe("recommended", "recommended")
PAIR_RECIPE = Recipe("pairs: cosine (last round's recommended)", "recommended-pairs", ("loss=cosine",), "pairs")
RECIPES = [
    OWN,
    Recipe("recommended, no update scaling", "recommended", ("update_scales=[1]",)),
    Recipe("batch_hard_soft_margin_triplet", "recommended", ("loss=batch_hard_soft_margin_triplet",)),
    Recipe("batch_semi_hard_triplet", "recommended", ("loss=batch_semi_hard_triplet",)),
    Recipe("group_mnrl", "recommended", ("loss=group_mnrl",)),
    Recipe("recommended, curriculum off", "recommended", ("curriculum=false",)),
    PAIR_RECIPE,
    Recipe("recommended-pairs (CoSENT)", "recommended-pairs", (), "pairs"),
    *[Recipe(p, p, (), "seed") for p in ("v2", "conservative", "aggressive", "hard-focus")],
]
GRIDS = {
    "default": {"tickets": ["recommended", PAIR_RECIPE.name],
                "sample": ["recommended", "group_mnrl", PAIR_RECIPE.name],
                "sts": [PAIR_RECIPE.name, "recommended-pairs (CoSENT)"]},
    "all": {name: [r.name for r in RECIPES if name != "sts" or r.kind != "group"] for name in ("tickets", "sample", "sts")},
}
# Pair counts per dataset; group recipes read the split's train tickets, pair recipes these pairs. Epochs of pair
# # recipes are rescaled to 3 in total so that they cost about what a group recipe does; on STSb every recipe trains
# one epoch of its own (the whole of sts-train).
SIZES = {"tickets": dict(pairs_per_phase=500, eval_pairs=300, test_pairs=1000),
         "sample": dict(pairs_per_phase=400, eval_pairs=300, test_pairs=600)}
PAIR_EPOCHS = 3.0
MAX_SEQ = 128


def dataset_pairs(name: str, seed: int) -> TrainingPairs:
    """The same split, tickets and pairs for every recipe of a dataset."""
    if name == "sts":
        folder = SHARED / "stsbenchmark"
        train_pairs = read_pairs(folder / "sts-train.csv").sample(frac=1.0, random_state=seed).reset_index(drop=True)
        return TrainingPairs(train_pairs,
                             # sts-dev is ordered by genre: its head is easy captions, so draw at random.
                             read_pairs(folder / "sts-dev.csv").sample(frac=1.0, random_state=seed).head(500)
                             .reset_index(drop=True), read_pairs(folder / "sts-test.csv"), "STS Benchmark")
    if name == "tickets":
        tickets = read_tickets(SHARED / "it-service-tickets" / "tickets.csv.gz", text_columns=["text"],
                               group_by="topic_group")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            generate_sample(3000, seed).to_csv(Path(tmp) / "sample.csv", index=False)
            tickets = read_tickets(Path(tmp) / "sample.csv", group_by="problem_id")
    # The sample is split by ticket, as the demo does: split by problem, its few test problems are told apart
    # perfectly by the untuned model (precision@10 0.995), leaving nothing to measure.
    pairset = build_pairs(tickets, PairOptions(seed=seed, split_by="ticket", **SIZES[name]))
    return from_pairset(pairset, name)


def run_recipe(recipe: Recipe, pairs: TrainingPairs, model_name: str, seed: int, work: Path, sts_test,
               extra: tuple[str, ...] = ()) -> dict:
    config = resolve_config(recipe.preset, sets=list(recipe.sets) + list(extra) + [f"seed={seed}"], model_name=model_name)
    updates = {"save_steps": None, "max_seq_length": min(config.max_seq_length, MAX_SEQ)}
    sts = pairs.source == "STS Benchmark"
    if sts:  # one phase: STSb has no ticket groups to grade difficulty by
        updates["phase_epochs"] = [config.phase_epochs[0]]
    elif recipe.kind != "group":
        total = sum(config.phase_epochs)
        updates["phase_epochs"] = [round(e * PAIR_EPOCHS / total, 3) for e in config.phase_epochs]
    config = config.model_copy(update=updates)
    # STS Benchmark's official splits share some sentences (75 test texts are in train); the standard
    # benchmark is kept as published, so the leakage guard is overridden for it alone.
    result = train(config, pairs, work / recipe.name.replace(" ", "_").replace("/", "-"), overwrite=True,
                   show_progress=False, phases="single" if sts else "keep", allow_leakage=sts)
    run = {"recipe": recipe, "metrics": result.metrics, "scores": result.test_scores, "log": result.log,
           "out": result.out, "config": config}
    if sts_test is not None and not sts:
        tuned = load_model(str(result.out / "model"), MAX_SEQ)
        run["sts"] = spearman_of(sts_test["label"].to_numpy(float), pair_scores(tuned, sts_test))
    return run


SWEEP_SCALES = (0.25, 0.5, 0.75, 1.0)  # 0 is the untuned model: the baseline row


def update_scale_sweep(run: dict, pairs: TrainingPairs, sts_test, seed: int) -> tuple[list[str], list[list[str]]]:
    """What each share of the recommended run's learned update costs and buys on the test sets: the saved adapter's
    B matrices rescaled (weights = untuned + s x update), test retrieval, hard pairs and STSb at each scale."""
    import torch

    from tickettune.evaluate import judge

    chosen = (run["log"].get("update_scale") or {}).get("chosen", 1.0)
    if not chosen or run["log"]["best"]["step"] in (0, None):  # the untuned weights were kept: nothing to scale
        return [], []
    model = load_model(str(run["out"] / "model"), MAX_SEQ)
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    base = load_model(run["config"].model_name, run["config"].max_seq_length)
    header = ["update scale", "precision@10 (Δ [95% CI])", "MRR@10 (Δ [95% CI])", "hard ROC-AUC (Δ [95% CI])",
              "STSb test Spearman"]
    rows = []
    sets = pairs.test_sets()
    sets.pairs = {k: v for k, v in sets.pairs.items() if k == "hard"}
    for scale in SWEEP_SCALES:
        if scale == chosen:  # the run itself
            results = {"retrieval": run["metrics"]["retrieval"], "hard": run["metrics"]["hard"]}
            rows.append([f"{scale:g} (chosen on eval)", _cell(results["retrieval"], "precision@10"),
                         _cell(results["retrieval"], "mrr@10"), _cell(results["hard"], "roc_auc"), f"{run['sts']:.4f}"])
            continue
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in saved:
                    param.copy_(saved[name] * (scale / chosen))
        results, _ = judge(model, base, sets, run["config"].retrieval_queries, resamples=1000, seed=seed)
        sts = spearman_of(sts_test["label"].to_numpy(float), pair_scores(model, sts_test))
        rows.append([f"{scale:g}",
                     _cell(results["retrieval"], "precision@10"), _cell(results["retrieval"], "mrr@10"),
                     _cell(results["hard"], "roc_auc"), f"{sts:.4f}"])
    return header, rows


def _interval(value: float | None, ci) -> str:
    if value is None or ci is None or any(v is None or math.isnan(v) for v in ci):
        return "n/a"
    star = "*" if ci[0] > 0 or ci[1] < 0 else ""
    return f"{value:+.4f} [{ci[0]:+.3f}, {ci[1]:+.3f}]{star}"


def _cell(result: dict, key: str) -> str:
    change = result.get("change", {})
    ci = change.get(f"{key}_ci95")
    return f"{result['model'][key]:.4f} ({_interval(change.get(key), ci)})"


def rows_for(runs: list[dict], sts_base: float | None) -> tuple[list[str], list[list[str]]]:
    first = runs[0]["metrics"]
    header = ["recipe"]
    # Each recipe is compared with the untuned model at its own max_seq_length; this row is the first recipe's.
    base = [f"untuned (max_seq_length {runs[0]['config'].max_seq_length})"]
    if "retrieval" in first:
        header += ["precision@10 (Δ [95% CI])", "MRR@10 (Δ [95% CI])"]
        base += [f"{first['retrieval']['baseline'][k]:.4f}" for k in ("precision@10", "mrr@10")]
    pair_sets = [name for name in first if name != "retrieval"]
    for name in pair_sets:
        key = "spearman" if name == "test" else "roc_auc"
        header.append(f"{name} pairs {'Spearman' if key == 'spearman' else 'ROC-AUC'} (Δ [95% CI])")
        base.append(f"{first[name]['baseline'][key]:.4f}")
    if sts_base is not None:
        header.append("STSb test Spearman (Δ)")
        base.append(f"{sts_base:.4f}")
    header += ["update scale", "best step", "train s"]
    rows = [base + ["", "", ""]]
    for run in runs:
        m, log = run["metrics"], run["log"]
        row = [run["recipe"].name]
        if "retrieval" in m:
            row += [_cell(m["retrieval"], k) for k in ("precision@10", "mrr@10")]
        row += [_cell(m[name], "spearman" if name == "test" else "roc_auc") for name in pair_sets]
        if sts_base is not None:
            row.append(f"{run['sts']:.4f} ({run['sts'] - sts_base:+.4f})")
        scale = (log.get("update_scale") or {}).get("chosen")
        row += ["-" if scale is None else f"{scale:g}", f"{log['best']['step']} of {log['total_steps']}",
                f"{log['train_seconds']:.0f}"]
        rows.append(row)
    return header, rows


def head_to_head(runs: list[dict], pairs: TrainingPairs, seed: int) -> tuple[list[str], list[list[str]]]:
    """The recommended recipe minus each other recipe, query by query and pair by pair (paired bootstrap)."""
    own = next((r for r in runs if r["recipe"] is OWN), None)
    if own is None:
        return [], []
    sets = pairs.test_sets()
    header = ["recommended − recipe"] + (["precision@10 [95% CI]", "MRR@10 [95% CI]"] if "retrieval" in own["scores"] else [])
    header += [f"{name} ROC-AUC [95% CI]" for name in sets.pairs]
    rows = []
    for run in runs:
        if run is own:
            continue
        row = [run["recipe"].name]
        if "retrieval" in own["scores"]:
            for key in ("precision@10", "mrr@10"):
                diff = own["scores"]["retrieval"][key] - run["scores"]["retrieval"][key]
                row.append(_interval(float(diff.mean()), mean_difference_ci(diff, seed=seed)))
        for name, frame in sets.pairs.items():
            labels = frame["label"].to_numpy(float)
            a, b = own["scores"][name], run["scores"][name]
            row.append(_interval(roc_auc_of(labels, a) - roc_auc_of(labels, b),
                                 paired_bootstrap_ci(labels, a, b, roc_auc_of, seed=seed)))
        rows.append(row)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def show(title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="left" if name in ("recipe", "recommended − recipe") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="tickets,sts,sample", help="comma-separated: tickets, sample, sts")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default")
    parser.add_argument("--only", default="", help="comma-separated recipe names to run (default: the grid's)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a knob of every recipe run (repeatable), e.g. --set max_train_tickets=5000")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if any(d in ("tickets", "sts") for d in datasets) and not SHARED.is_dir():
        sys.exit(f"the tickets and sts datasets need {SHARED}; run with --datasets sample")
    by_name = {r.name: r for r in RECIPES}
    sts_test = read_pairs(SHARED / "stsbenchmark" / "sts-test.csv") if SHARED.is_dir() else None
    sts_base = None
    if sts_test is not None:
        sts_base = spearman_of(sts_test["label"].to_numpy(float), pair_scores(load_model(args.model, MAX_SEQ), sts_test))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            dataset_started = time.perf_counter()
            console.print(f"[bold]{dataset}[/bold]: building the split, tickets and pairs")
            pairs = dataset_pairs(dataset, args.seed)
            names = [n.strip() for n in args.only.split(",") if n.strip()] or GRIDS[args.grid][dataset]
            runs = []
            for name in names:
                run = run_recipe(by_name[name], pairs, args.model, args.seed, Path(tmp), sts_test, tuple(args.sets))
                runs.append(run)
                headline = run["metrics"].get("retrieval") or next(iter(run["metrics"].values()))
                key = "precision@10" if "retrieval" in run["metrics"] else "spearman"
                console.print(f"  {name:<44} {key} {headline['model'][key]:.4f} ({headline['change'][key]:+.4f})  "
                              f"{run['log']['train_seconds']:.0f} s")
            header, rows = rows_for(runs, None if dataset == "sts" else sts_base)
            sets = pairs.test_sets()
            about = (f"{len(sets.tickets)} held-out tickets searched ({runs[0]['metrics']['retrieval']['model']['n_queries']} "
                     f"queries), " if sets.tickets is not None else "") + \
                ", ".join(f"{len(f)} {n} pairs" for n, f in sets.pairs.items())
            show(f"{dataset}: {about}; {args.model}, seed {args.seed}; * = 95% CI excludes 0", header, rows)
            versus_header, versus = head_to_head(runs, pairs, args.seed)
            if versus:
                show(f"{dataset}: recommended against each recipe on the same queries and pairs", versus_header, versus)
            minutes = (time.perf_counter() - dataset_started) / 60
            console.print(f"{dataset}: {minutes:.1f} min; all so far {(time.perf_counter() - started) / 60:.1f} min")
            if not args.no_record:
                # Recorded per dataset, so that a later failure cannot lose the figures already printed.
                body = (f"{dataset}: {about}; {args.model}, seed {args.seed}"
                        + (f", every recipe with {', '.join(args.sets)}" if args.sets else "") + "; Δ = tuned − untuned on the same held-out "
                        f"data, paired bootstrap 95% CI (* excludes 0); update scale: the WiSE-FT scale chosen on eval "
                        f"retrieval; best step: the eval step whose weights were kept (0 = untuned); each Δ is "
                        f"against the untuned model at the recipe's own max_seq_length; "
                        f"{minutes:.1f} min for this dataset\n\n" + markdown(header, rows)
                        + ("\n\nrecommended minus each recipe on the same queries and pairs:\n\n"
                           + markdown(versus_header, versus) if versus else ""))
                _results.append_under("Recipes judged by retrieval", body, f"Recipes by retrieval, {dataset}")
            own = next((r for r in runs if r["recipe"] is OWN), None)
            sweep_header, sweep = ([], []) if own is None or sts_test is None or dataset == "sts" else \
                update_scale_sweep(own, pairs, sts_test, args.seed)
            if sweep:
                show(f"{dataset}: the recommended run's update at other scales (test sets)", sweep_header, sweep)
                if not args.no_record:
                    _results.append_under("Recipes judged by retrieval", "the recommended run's learned update scaled "
                                          "after the fact (WiSE-FT: untuned + scale x update; the run chose its scale "
                                          "on eval retrieval, these are the test sets)\n\n" + markdown(sweep_header, sweep),
                                          f"Update scale of the recommended run, {dataset}")
    console.print(f"total wall-clock: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
