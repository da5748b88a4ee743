"""Feedback that trains: simulated agents judge the untuned model's suggestions, `train --feedback` learns from them.

1. The built-in sample is split as `tickettune pairs` splits it (TF-IDF difficulty, seed 0).
2. Simulated agents (seeded): production is another draw of the sample (seed + 1, `--production` tickets,
   none of them in training or test); each of its tickets with a problem is a new incident, the untuned model
   suggests its top `--suggestions` other production tickets, an agent confirms a suggestion of the same
   problem (duplicate) and rejects the others (unrelated), and gets `--noise` of the verdicts wrong. The
   verdicts are written as `tickettune feedback export` writes them.
3. The same recipe trains twice, without and with `--feedback` (a fifth of the queries held out of training):
   by default the default recipe (`recommended`: a linear head on the frozen encoder's cached vectors, the
   verdicts a pair term of its loss); `--preset recommended-pairs` trains the encoder on them as pairs.
4. Measured: the mean score of the rejected and confirmed suggestions (held-out queries, and those trained on)
   under the untuned model, the run without feedback and the run with it; retrieval precision@10 on the
   held-out test tickets of both runs (by the training labels); and same-problem retrieval (MRR@10,
   precision@10 by problem_id) on those test tickets, which is what the verdicts are about.

`--group-by assignment_group` trains on coarse labels, as a team whose export has no problem links does: the
labels then say "different group, different problem" and nothing finer, and the agents' verdicts (always by
problem) carry what the labels lack. With `--group-by problem_id` (the default) the verdicts repeat what the
labels already say.

    python benchmarks/feedback.py                       # appends to RESULTS.md (a few minutes on 2 cores)
    python benchmarks/feedback.py --group-by assignment_group
    python benchmarks/feedback.py --sample 600 --production 300 --no-record
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_under  # noqa: E402
from tickettune.core.models import load_model  # noqa: E402
from tickettune.core.similarity import encode_texts, pair_scores  # noqa: E402
from tickettune.data.pairs import PairOptions, build_pairs, write_pair_dir  # noqa: E402
from tickettune.data.sample import generate_sample  # noqa: E402
from tickettune.data.tickets import read_tickets  # noqa: E402
from tickettune.evaluation.retrieval import corpus_metrics, mean_difference_ci, query_rows  # noqa: E402
from tickettune.serving.feedback import LABELS  # noqa: E402
from tickettune.training.config import resolve_config  # noqa: E402
from tickettune.training.dataset import load_pairs  # noqa: E402
from tickettune.training.feedback_pairs import read_feedback, split_feedback  # noqa: E402
from tickettune.training.run import train  # noqa: E402


def simulate_agents(model, corpus: pd.DataFrame, suggestions: int, noise: float, seed: int) -> list[dict]:
    """Verdicts on the top suggestions of each ticket with a problem (among the others of `corpus`): duplicate
    when the problems agree, else unrelated; a `noise` share of them flipped (agents err)."""
    rng = np.random.default_rng(seed)
    vectors = encode_texts(model, sorted(set(corpus["text"])))
    corpus_vectors = np.stack([vectors[t] for t in corpus["text"]])
    sizes = corpus["group"].map(corpus["group"].value_counts())
    lines = []
    for position, (_, query) in enumerate(corpus.iterrows()):
        if sizes.iloc[position] < 2:
            continue
        scores = corpus_vectors @ vectors[query["text"]]
        scores[position] = -np.inf
        for row in np.argsort(-scores)[:suggestions]:
            same = corpus["group"].iloc[row] == query["group"]
            if rng.random() < noise:
                same = not same
            verdict = "duplicate" if same else "unrelated"
            lines.append({"text1": query["text"], "text2": corpus["text"].iloc[row], "label": LABELS[verdict],
                          "verdict": verdict, "query_number": None, "suggested": str(corpus["number"].iloc[row]),
                          "agent": f"agent-{int(rng.integers(5))}"})
    return lines


def kept(log: dict) -> str:
    """The head epoch (or encoder step) the run kept by eval, and the update scale it chose."""
    scale = (log.get("update_scale") or {}).get("chosen", 1)
    return f"{log['best']['step']} of {log['total_steps']}, {scale:g}"


def config_length(sets: list[str]) -> int:
    """The max_seq_length the runs read texts at (the last --set of it), so every model is scored alike."""
    lengths = [int(item.split("=", 1)[1]) for item in sets if item.startswith("max_seq_length=")]
    return lengths[-1] if lengths else 128


def mean_scores(model, pairs: pd.DataFrame) -> dict[str, float]:
    scores = pair_scores(model, pairs)
    labels = pairs["label"].to_numpy()
    return {"rejected": float(scores[labels == 0].mean()), "confirmed": float(scores[labels == 1].mean())}


def problem_retrieval(model, tickets: pd.DataFrame, problem_of: dict[str, str]) -> dict[str, np.ndarray]:
    """Per-query MRR@10 and precision@10 of the held-out tickets searching each other for their problem (tickets
    without a problem are in the corpus, never queries)."""
    texts = list(tickets["text"])
    vectors = encode_texts(model, sorted(set(texts)))
    groups = [problem_of.get(text, f"unknown:{i}") for i, text in enumerate(texts)]
    return corpus_metrics(np.stack([vectors[t] for t in texts]), groups, query_rows(groups, None, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--sample", type=int, default=1500)
    parser.add_argument("--pairs-per-phase", type=int, default=300)
    parser.add_argument("--production", type=int, default=600, help="tickets of the simulated production draw")
    parser.add_argument("--suggestions", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--preset", default="recommended", help="the recipe (recommended: the head stage)")
    parser.add_argument("--set", dest="sets", action="append", default=["max_seq_length=64", "eval_tickets=300",
                                                                         "bootstrap_resamples=200"])
    parser.add_argument("--work", default="/tmp/tickettune-feedback")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-by", default="problem_id", help="the training labels (assignment_group: coarse)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    generate_sample(args.sample, args.seed).to_csv(work / "sample.csv", index=False)
    pairset = build_pairs(read_tickets(work / "sample.csv", group_by=args.group_by),
                          PairOptions(seed=args.seed, difficulty="tfidf", pairs_per_phase=args.pairs_per_phase,
                                      eval_pairs=200, test_pairs=300))
    pairs_dir = write_pair_dir(pairset, work / "pairs", overwrite=True)
    base = load_model(args.model, config_length(args.sets))
    generate_sample(args.production, args.seed + 1).to_csv(work / "production.csv", index=False)
    production = read_tickets(work / "production.csv", group_by="problem_id").frame
    # A template can write the same text in both draws; such tickets are not new, and training refuses test texts.
    seen = {" ".join(t.lower().split()) for t in read_tickets(work / "sample.csv", group_by="problem_id").frame["text"]}
    production = production[~production["text"].map(lambda t: " ".join(t.lower().split()) in seen)]
    lines = simulate_agents(base, production, args.suggestions, args.noise, args.seed)
    feedback = work / "feedback.jsonl"
    feedback.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = resolve_config(args.preset, sets=[f"seed={args.seed}", f"vector_cache={work / 'vectors'}", *args.sets],
                            model_name=args.model)
    trained_on, held = split_feedback(read_feedback(feedback), config.seed)

    runs, seconds = {}, {}
    for name, with_feedback in (("without feedback", False), ("with --feedback", True)):
        started = time.perf_counter()
        data = load_pairs(pairs_dir)
        if with_feedback:
            from tickettune.training.feedback_pairs import add_feedback

            data, note = add_feedback(data, feedback, seed=config.seed, loss=config.loss, stage=config.stage)
            print(note, flush=True)
        runs[name] = train(config, data, work / name.replace(" ", "-").strip("-"), overwrite=True, show_progress=False)
        seconds[name] = time.perf_counter() - started
    sample = read_tickets(work / "sample.csv", group_by="problem_id").frame
    problem_of = dict(zip(sample["text"], sample["group"]))  # a ticket without a problem is a group of its own
    test_tickets = pairset.tickets["test"]
    rows, problems = [], {}
    tuned = [(n, load_model(str(r.out / "model"), config_length(args.sets))) for n, r in runs.items()]
    for name, model in [("untuned", base)] + tuned:
        held_means, trained_means = mean_scores(model, held), mean_scores(model, trained_on)
        problems[name] = problem_retrieval(model, test_tickets, problem_of)
        retrieval = runs[name].metrics["retrieval"]["model"] if name in runs else \
            next(iter(runs.values())).metrics["retrieval"]["baseline"]
        rows.append({"model": name, "rejected, held-out queries": f"{held_means['rejected']:.3f}",
                     "confirmed, held-out queries": f"{held_means['confirmed']:.3f}",
                     "rejected, trained on": f"{trained_means['rejected']:.3f}",
                     "confirmed, trained on": f"{trained_means['confirmed']:.3f}",
                     f"test precision@10 ({args.group_by})": f"{retrieval['precision@10']:.4f}",
                     "same-problem MRR@10": f"{problems[name]['mrr@10'].mean():.4f}",
                     "same-problem precision@10": f"{problems[name]['precision@10'].mean():.4f}",
                     "kept epoch, update scale": kept(runs[name].log) if name in runs else "-",
                     "training time": f"{seconds[name]:.0f} s" if name in seconds else "-"})
    per_query = {name: run.test_scores["retrieval"]["precision@10"] for name, run in runs.items()}
    difference = per_query["with --feedback"] - per_query["without feedback"]
    low, high = mean_difference_ci(difference, resamples=1000, seed=args.seed)
    same_problem = {key: problems["with --feedback"][key] - problems["without feedback"][key]
                    for key in ("mrr@10", "precision@10")}
    same_problem_ci = {key: mean_difference_ci(d, resamples=1000, seed=args.seed) for key, d in same_problem.items()}
    against_untuned = runs["with --feedback"].metrics["retrieval"]["change"]
    table = pd.DataFrame(rows)
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = header + "".join("| " + " | ".join(str(v) for v in r) + " |\n" for r in table.itertuples(index=False))
    counts = pd.Series([line["verdict"] for line in lines]).value_counts().to_dict()
    notes = (f"\nBuilt-in sample, {args.sample} tickets (trained on {args.group_by}), {args.pairs_per_phase} pairs "
             "per phase; "
             f"recipe `{args.preset}` (stage {config.stage}) with {', '.join(args.sets)}, base `{args.model}`. "
             "Simulated agents: "
             f"{args.production} production tickets (sample seed {args.seed + 1}), those with a problem as new "
             f"incidents, top {args.suggestions} untuned "
             f"suggestions each, {args.noise:.0%} of verdicts wrong: {len(lines)} verdicts ({counts}); "
             f"{len(trained_on)} trained on, {len(held)} held out (whole queries). Mean cosine of the suggestions "
             "per verdict; precision@10 on the held-out test tickets. With feedback minus without: precision@10 "
             f"{difference.mean():+.4f} (paired bootstrap 95% CI {low:+.4f} to {high:+.4f}, {len(difference)} "
             "queries); with feedback minus untuned: "
             f"{against_untuned['precision@10']:+.4f} (95% CI {against_untuned['precision@10_ci95'][0]:+.4f} to "
             f"{against_untuned['precision@10_ci95'][1]:+.4f}). Same-problem retrieval on the "
             f"{len(test_tickets)} held-out test tickets ({len(same_problem['mrr@10'])} queries with a problem), with "
             "feedback minus without: "
             + "; ".join(f"{key} {d.mean():+.4f} (95% CI {same_problem_ci[key][0]:+.4f} to {same_problem_ci[key][1]:+.4f})"
                         for key, d in same_problem.items()) + ".\n")
    print(body + notes)
    if not args.no_record:
        append_under("Feedback", body + notes, title="Feedback that trains")


if __name__ == "__main__":
    main()
