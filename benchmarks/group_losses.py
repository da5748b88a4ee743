"""Why did group losses make search worse? One group loss at a time, its retrieval traced while it trains.

    python benchmarks/group_losses.py --loss batch_all --distance cosine --margin 0.2 --lr 2e-4 --steps 150
    python benchmarks/group_losses.py --loss batch_all --distance euclidean --margin 5 --lr 2e-4 --steps 100

A study, not a recipe: it trains all-MiniLM-L6-v2 with LoRA (r 16) on random P x K batches of the shared IT
tickets (8 groups x 8 tickets) with one sentence-transformers batch loss, and every `--eval-every` steps
searches 4,000 held-out tickets with 1,000 of them as queries (precision@10, MRR@10: same definitions as
tickettune's retrieval.py). At the end it scales the learned LoRA update by 0.25, 0.5 and 0.75 (WiSE-FT) and
searches again. This is a bare loop rather than `tickettune train`, so that one loss's trajectory costs minutes,
not a full run with its pair sets and reports; the recipe comparison with intervals is benchmarks/recipes.py.
Lines of JSON go to stdout; --record appends the trajectory to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
from tickettune.core.models import load_model  # noqa: E402
from tickettune.core.textio import normalise_text  # noqa: E402
from tickettune.data.tickets import read_tickets  # noqa: E402
from tickettune.evaluation.retrieval import corpus_metrics, query_rows  # noqa: E402
from tickettune.training.config import TrainConfig  # noqa: E402
from tickettune.training.lora import add_lora  # noqa: E402

TICKETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "it-service-tickets" / "tickets.csv.gz"


def build_loss(name: str, model, distance: str, margin: float):
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.losses.batch_hard_triplet import (
        BatchHardTripletLossDistanceFunction as Distance,
    )

    metric = {"cosine": Distance.cosine_distance, "euclidean": Distance.euclidean_distance}[distance]
    return {"batch_all": lambda: losses.BatchAllTripletLoss(model, distance_metric=metric, margin=margin),
            "batch_hard": lambda: losses.BatchHardTripletLoss(model, distance_metric=metric, margin=margin),
            "batch_semi_hard": lambda: losses.BatchSemiHardTripletLoss(model, distance_metric=metric, margin=margin),
            "batch_hard_soft_margin": lambda: losses.BatchHardSoftMarginTripletLoss(model, distance_metric=metric)}[name]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", default="batch_all", choices=["batch_all", "batch_hard", "batch_semi_hard",
                                                                "batch_hard_soft_margin"])
    parser.add_argument("--distance", default="cosine", choices=["cosine", "euclidean"])
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--groups", type=int, default=8, help="groups per batch (P)")
    parser.add_argument("--per-group", type=int, default=8, help="tickets per group (K)")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="append the trajectory to RESULTS.md")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    tickets = read_tickets(TICKETS, text_columns=["text"], group_by="topic_group").frame
    text, group = tickets["text"].to_numpy(), pd.factorize(tickets["group"])[0]
    order = rng.permutation(len(text))
    held_out, train_rows = order[:len(text) // 5], order[len(text) // 5:]
    seen = {normalise_text(t) for t in text[train_rows]}
    held_out = np.array([i for i in held_out if normalise_text(text[i]) not in seen])
    corpus = rng.choice(held_out, min(4000, len(held_out)), replace=False)
    queries = query_rows(group[corpus], 1000, args.seed)

    model = load_model("all-MiniLM-L6-v2", args.max_seq_length)
    trace = []

    def search(tag: str) -> None:
        model.eval()
        with torch.no_grad():
            vectors = model.encode(list(text[corpus]), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        per_query = corpus_metrics(vectors, group[corpus], queries)
        model.train()
        trace.append({"at": tag, **{k: round(float(per_query[k].mean()), 4) for k in ("precision@10", "mrr@10")}})
        print(json.dumps(trace[-1]), flush=True)

    search("untuned")
    add_lora(model, TrainConfig(lora_r=16, lora_alpha=32))
    loss = build_loss(args.loss, model, args.distance, args.margin)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1, max(0, s - warmup) / max(1, args.steps - warmup)))))
    members = {g: train_rows[group[train_rows] == g] for g in np.unique(group[train_rows])}
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        chosen = rng.choice(list(members), args.groups, replace=False)
        rows = np.concatenate([rng.choice(members[g], args.per_group, replace=False) for g in chosen])
        features = model.tokenize(list(text[rows]))
        value = loss([features], torch.tensor(group[rows]))
        value.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == args.steps:
            search(f"step {step}")
    seconds = time.perf_counter() - started
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    for scale in (0.25, 0.5, 0.75):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in trained:
                    param.copy_(trained[name] * scale)
        search(f"update x {scale}")
    print(json.dumps({"train_seconds": round(seconds)}))
    if args.record:
        header = "| at | precision@10 | MRR@10 |\n|---|---:|---:|\n"
        body = (f"{args.loss}, {args.distance} distance, margin {args.margin:g}, lr {args.lr:g}, {args.steps} steps of "
                f"{args.groups} x {args.per_group} tickets, max_seq_length {args.max_seq_length}; 4,000 held-out IT "
                f"tickets searched by 1,000 of them; {seconds:.0f} s of training\n\n" + header
                + "\n".join(f"| {t['at']} | {t['precision@10']:.4f} | {t['mrr@10']:.4f} |" for t in trace))
        _results.append_under("Group losses traced", body, f"{args.loss}, {args.distance}, margin {args.margin:g}, "
                                                           f"lr {args.lr:g}")


if __name__ == "__main__":
    main()
