"""Which recipe makes search better at the job? Head and encoder recipes, judged on both yardsticks.

    python benchmarks/recipes.py                         # IT tickets, firefox, eclipse, the sample and STSb
    python benchmarks/recipes.py --datasets firefox,eclipse --only recommended
    python benchmarks/recipes.py --datasets sample --grid all   # every recipe, the seed presets included

Every run trains the same base model with the same seed on the same split and is judged, against the untuned
model on the same held-out data, first on retrieval (each held-out ticket whose group has another member
searches all held-out tickets: precision@10, MRR@10), then on the same-problem probes (the hadoop and seamonkey
duplicate bug reports of ../shared: does a filed duplicate come first, is one in the top 10?), then on
representative test pairs (drawn uniformly, none mined), then on the lexically hard test pairs, a stress test.
Each change comes with a paired bootstrap 95% interval (over queries, over pairs). Each ticket-tuned model is also
scored on the STS Benchmark test set, so a recipe that trades general similarity for the ticket labels shows it.

Datasets: `tickets` (the IT tickets by topic: coarse labels, split by ticket), `firefox` and `eclipse` (duplicate
bug reports by problem_id: same-problem links, split by group, so the held-out duplicates are of problems never
trained on), `sample` (the synthetic incidents by problem, split by ticket), `sts`. For head recipes the run's
learned change is also scaled after the fact (the trade-off curve: same-group retrieval against the probes).
Each dataset's tables are printed and appended to benchmarks/RESULTS.md (command, machine, load, date) as soon as
it is done.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
from tickettune.core.models import load_model  # noqa: E402
from tickettune.core.similarity import pair_scores  # noqa: E402
from tickettune.data.pairs import PairOptions, build_pairs  # noqa: E402
from tickettune.data.pairs_io import read_pairs  # noqa: E402
from tickettune.data.sample import generate_sample  # noqa: E402
from tickettune.data.tickets import read_tickets  # noqa: E402
from tickettune.evaluation.judge import paired_bootstrap_ci, roc_auc_of, spearman_of  # noqa: E402
from tickettune.evaluation.probes import is_probe, probe_name, read_probes  # noqa: E402
from tickettune.evaluation.retrieval import mean_difference_ci  # noqa: E402
from tickettune.training.config import resolve_config  # noqa: E402
from tickettune.training.dataset import TrainingData, from_pairset  # noqa: E402
from tickettune.training.run import train  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
console = Console(highlight=False, width=200)  # wide tables stay readable in a log file


@dataclass(frozen=True)
class Recipe:
    """One row: a preset plus the knobs that make it differ."""

    name: str
    preset: str
    sets: tuple[str, ...] = ()
    kind: str = "group"  # "head": a head on tickets; "group": LoRA on tickets; "pairs": on pairs; "seed": a seed preset


OWN = Recipe("recommended", "recommended", (), "head")
LORA = Recipe("recommended-lora (LoRA batch_all_triplet, last round's)", "recommended-lora")
PAIR_RECIPE = Recipe("pairs: cosine", "recommended-pairs", ("loss=cosine",), "pairs")
RECIPES = [
    OWN,
    Recipe("head: coarse objective (push + keep)", "recommended", ("label_kind=coarse",), "head"),
    Recipe("head: problem objective (InfoNCE + keep)", "recommended", ("label_kind=problem",), "head"),
    Recipe("head: coarse, no keep term", "recommended", ("label_kind=coarse", "head_keep_weight=0"), "head"),
    Recipe("head: coarse, margin 0.05", "recommended", ("label_kind=coarse", "head_margin=0.05"), "head"),
    Recipe("head: coarse, margin 0.3", "recommended", ("label_kind=coarse", "head_margin=0.3"), "head"),
    Recipe("head: no update scaling", "recommended", ("update_scales=[1]",), "head"),
    LORA,
    Recipe("LoRA batch_hard_soft_margin_triplet", "recommended-lora", ("loss=batch_hard_soft_margin_triplet",)),
    Recipe("LoRA group_mnrl", "recommended-lora", ("loss=group_mnrl",)),
    Recipe("LoRA, curriculum off", "recommended-lora", ("curriculum=false",)),
    PAIR_RECIPE,
    Recipe("recommended-pairs (CoSENT)", "recommended-pairs", (), "pairs"),
    *[Recipe(p, p, (), "seed") for p in ("v2", "conservative", "aggressive", "hard-focus")],
]
TICKET_DATASETS = ("tickets", "firefox", "eclipse", "sample")
GRIDS = {
    "default": {"tickets": ["recommended", "head: problem objective (InfoNCE + keep)", LORA.name],
                "firefox": ["recommended", "head: coarse objective (push + keep)", "LoRA group_mnrl"],
                "eclipse": ["recommended", "head: coarse objective (push + keep)", "LoRA group_mnrl"],
                "sample": ["recommended", LORA.name],
                "sts": [PAIR_RECIPE.name, "recommended-pairs (CoSENT)"]},
    "all": {name: [r.name for r in RECIPES if name != "sts" or r.kind not in ("group", "head")]
            for name in TICKET_DATASETS + ("sts",)},
}
PROBES = ("hadoop", "seamonkey")
PROBE_KEYS = ("mrr@10", "accuracy@10")  # real duplicate reports: the same-problem yardstick, judged with every ticket run
# Pair counts per dataset; group recipes read the split's train tickets, pair recipes these pairs. Epochs of pair
# # recipes are rescaled to 3 in total so that they cost about what a group recipe does; on STSb every recipe trains
# one epoch of its own (the whole of sts-train).
SIZES = {"tickets": {"pairs_per_phase": 500, "eval_pairs": 300, "test_pairs": 1000},
         "firefox": {"pairs_per_phase": 150, "eval_pairs": 100, "test_pairs": 200},
         "eclipse": {"pairs_per_phase": 150, "eval_pairs": 100, "test_pairs": 200},
         "sample": {"pairs_per_phase": 400, "eval_pairs": 300, "test_pairs": 600}}
PAIR_EPOCHS = 3.0
MAX_SEQ = 128


def dataset_pairs(name: str, seed: int) -> TrainingData:
    """The same split, tickets and pairs for every recipe of a dataset."""
    if name == "sts":
        folder = SHARED / "stsbenchmark"
        train_pairs = read_pairs(folder / "sts-train.csv").sample(frac=1.0, random_state=seed).reset_index(drop=True)
        return TrainingData(train_pairs,
                             # sts-dev is ordered by genre: its head is easy captions, so draw at random.
                             read_pairs(folder / "sts-dev.csv").sample(frac=1.0, random_state=seed).head(500)
                             .reset_index(drop=True), read_pairs(folder / "sts-test.csv"), "STS Benchmark")
    split = "ticket"
    if name == "tickets":
        tickets = read_tickets(SHARED / "it-service-tickets" / "tickets.csv.gz", text_columns=["text"],
                               group_by="topic_group")
    elif name in ("firefox", "eclipse"):
        # Split by problem: the held-out duplicates are of problems training never saw.
        tickets = read_tickets(SHARED / "bug-duplicates" / f"{name}.csv", text_columns=["text"], group_by="problem_id")
        split = "group"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            generate_sample(3000, seed).to_csv(Path(tmp) / "sample.csv", index=False)
            tickets = read_tickets(Path(tmp) / "sample.csv", group_by="problem_id")
    # The sample is split by ticket, as the demo does: split by problem, its few test problems are told apart
    # perfectly by the untuned model (precision@10 0.995), leaving nothing to measure.
    pairset = build_pairs(tickets, PairOptions(seed=seed, split_by=split, difficulty="tfidf", **SIZES[name]))
    probes = read_probes([SHARED / "bug-duplicates" / f"{p}.csv" for p in PROBES]) if SHARED.is_dir() else {}
    return replace(from_pairset(pairset, name), probes=probes)


def run_recipe(recipe: Recipe, pairs: TrainingData, model_name: str, seed: int, work: Path, sts_test,
               extra: tuple[str, ...] = ()) -> dict:
    config = resolve_config(recipe.preset, sets=list(recipe.sets) + list(extra) + [f"seed={seed}"], model_name=model_name)
    # Encoder recipes read MAX_SEQ tokens (a LoRA step's cost grows with them); a head recipe encodes each ticket once
    # (cached) and keeps the model's own length, as a user's run would.
    updates = {"save_steps": None} if recipe.kind == "head" else \
        {"save_steps": None, "max_seq_length": min(config.max_seq_length, MAX_SEQ)}
    sts = pairs.source == "STS Benchmark"
    if sts:  # one phase: STSb has no ticket groups to grade difficulty by
        updates["phase_epochs"] = [config.phase_epochs[0]]
    elif recipe.kind not in ("group", "head"):
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


def update_scale_sweep(run: dict, pairs: TrainingData, sts_test, seed: int) -> tuple[list[str], list[list[str]]]:
    """What each share of the recommended run's learned update costs and buys on the test sets: the saved adapter's
    B matrices rescaled (weights = untuned + s x update), test retrieval, hard pairs and STSb at each scale."""
    import torch

    from tickettune.evaluation.judge import judge

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
        results, _ = judge(model, base, sets, queries=run["config"].retrieval_queries, resamples=1000, seed=seed)
        sts = spearman_of(sts_test["label"].to_numpy(float), pair_scores(model, sts_test))
        rows.append([f"{scale:g}",
                     _cell(results["retrieval"], "precision@10"), _cell(results["retrieval"], "mrr@10"),
                     _cell(results["hard"], "roc_auc"), f"{sts:.4f}"])
    return header, rows


HEAD_SCALES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # past 1: the same direction pushed further


def head_scale_sweep(run: dict, pairs: TrainingData, sts_test, seed: int) -> tuple[list[str], list[list[str]]]:
    """The trade-off curve of a head run: its learned change (W - I) scaled after the fact by each of HEAD_SCALES,
    judged on the test tickets, the probes and STSb from the run's cached vectors (nothing is encoded again)."""
    from tickettune.core.similarity import encode_texts, pair_cosines
    from tickettune.core.vector_cache import CachedEncoder
    from tickettune.evaluation.judge import judge, texts_of
    from tickettune.training.head import LinearHead
    from tickettune.training.head_training import HeadEncoder

    if run["log"]["best"]["step"] in (0, None):  # the untuned encoder was kept: nothing to scale
        return [], []
    chosen = (run["log"].get("update_scale") or {}).get("chosen", 1.0)
    saved = load_model(str(run["out"] / "model"))
    dense = [m for m in saved if type(m).__name__ == "Dense"][-1]
    trained = LinearHead(dense.linear.weight.detach().numpy(), dense.linear.bias.detach().numpy()).scaled(1 / chosen)
    config = run["config"]
    encoder = CachedEncoder.for_model(load_model(config.model_name, config.max_seq_length), config.model_name)
    sets = pairs.test_sets()
    sets.pairs = {}
    metrics = run["metrics"]
    probes = [name for name in metrics if is_probe(name)]
    header = ["scale of the learned change", "precision@10 (Δ [95% CI])", "MRR@10 (Δ [95% CI])"] + \
        [f"{probe_name(p)} {k} (Δ [95% CI])" for p in probes for k in PROBE_KEYS] + ["STSb test Spearman"]
    rows = []
    for scale in HEAD_SCALES:
        tuned = HeadEncoder(encoder, trained.scaled(scale))
        results, _ = judge(tuned, encoder, sets, queries=config.retrieval_queries, resamples=1000, seed=seed)
        vectors = encode_texts(tuned, texts_of([sts_test], None))
        sts = spearman_of(sts_test["label"].to_numpy(float), pair_cosines(vectors, sts_test))
        rows.append([f"{scale:g}" + (" (chosen on eval)" if scale == chosen else ""),
                     _cell(results["retrieval"], "precision@10"), _cell(results["retrieval"], "mrr@10")]
                    + [_cell(results[p], k) for p in probes for k in PROBE_KEYS] + [f"{sts:.4f}"])
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


def rows_for(runs: list[dict], sts_base: float | None, dataset: str) -> tuple[list[str], list[list[str]]]:
    first = runs[0]["metrics"]
    header = ["recipe"]
    # Each recipe is compared with the untuned model at its own max_seq_length; this row is the first recipe's.
    base = [f"untuned (max_seq_length {runs[0]['config'].max_seq_length})"]
    # With problem links (duplicates: one or two per report) a found duplicate is the figure: accuracy@10 too.
    search_keys = ("precision@10", "mrr@10") + (("accuracy@10",) if dataset in ("firefox", "eclipse") else ())
    if "retrieval" in first:
        header += [f"{k} (Δ [95% CI])" for k in search_keys]
        base += [f"{first['retrieval']['baseline'][k]:.4f}" for k in search_keys]
    probes = [name for name in first if is_probe(name)]
    for name in probes:
        header += [f"{probe_name(name)} duplicates MRR@10 (Δ [95% CI])", f"{probe_name(name)} accuracy@10 (Δ [95% CI])"]
        base += [f"{first[name]['baseline'][k]:.4f}" for k in PROBE_KEYS]
    pair_sets = [name for name in first if name != "retrieval" and not is_probe(name)]
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
            row += [_cell(m["retrieval"], k) for k in search_keys]
        row += [_cell(m[name], k) for name in probes for k in PROBE_KEYS]
        row += [_cell(m[name], "spearman" if name == "test" else "roc_auc") for name in pair_sets]
        if sts_base is not None:
            row.append(f"{run['sts']:.4f} ({run['sts'] - sts_base:+.4f})")
        scale = (log.get("update_scale") or {}).get("chosen")
        row += ["-" if scale is None else f"{scale:g}", f"{log['best']['step']} of {log['total_steps']}",
                f"{log['train_seconds']:.0f}"]
        rows.append(row)
    return header, rows


def head_to_head(runs: list[dict], pairs: TrainingData, seed: int) -> tuple[list[str], list[list[str]]]:
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
    parser.add_argument("--datasets", default="tickets,firefox,eclipse,sample,sts",
                        help="comma-separated: tickets, firefox, eclipse, sample, sts")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default")
    parser.add_argument("--only", default="", help="comma-separated recipe names to run (default: the grid's)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a knob of every recipe run (repeatable), e.g. --set max_train_tickets=5000")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if any(d != "sample" for d in datasets) and not SHARED.is_dir():
        sys.exit(f"the tickets, firefox, eclipse and sts datasets need {SHARED}; run with --datasets sample")
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
            header, rows = rows_for(runs, None if dataset == "sts" else sts_base, dataset)
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
                        + (f", every recipe with {', '.join(args.sets)}" if args.sets else "")
                        + "; Δ = tuned − untuned on the same held-out "
                        f"data, paired bootstrap 95% CI (* excludes 0); update scale: the WiSE-FT scale chosen on eval "
                        f"retrieval; best step: the eval step whose weights were kept (0 = untuned); each Δ is "
                        f"against the untuned model at the recipe's own max_seq_length; "
                        f"{minutes:.1f} min for this dataset\n\n" + markdown(header, rows)
                        + ("\n\nrecommended minus each recipe on the same queries and pairs:\n\n"
                           + markdown(versus_header, versus) if versus else ""))
                _results.append_under("Recipes judged by retrieval", body, f"Recipes by retrieval, {dataset}")
            own = next((r for r in runs if r["recipe"] is OWN), None)
            sweep_header, sweep = ([], []) if own is None or sts_test is None or dataset == "sts" else \
                (head_scale_sweep if own["recipe"].kind == "head" else update_scale_sweep)(own, pairs, sts_test, args.seed)
            if sweep:
                show(f"{dataset}: the recommended run's update at other scales (test sets)", sweep_header, sweep)
                if not args.no_record:
                    _results.append_under("Recipes judged by retrieval", "the recommended run's learned update scaled "
                                          "after the fact (the trade-off curve: untuned + scale x update; the run "
                                          "chose its scale on eval retrieval, these are the test sets and probes)\n\n"
                                          + markdown(sweep_header, sweep),
                                          f"Update scale of the recommended run, {dataset}")
    console.print(f"total wall-clock: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
