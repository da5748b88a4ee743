"""Retrieval metrics: for each query ticket, are the top-ranked tickets of the corpus from its group?

This is the job a tuned model is deployed for (a new incident comes in; are the top 10 results the
same problem?), so it is measured directly rather than inferred from pair scores. Given unit-length
vectors of a corpus and its group per ticket, each query is ranked against the whole corpus by cosine
(the query itself left out when it is a corpus ticket) and judged by which results share its group:

    mrr@10        1 / rank of the first relevant result in the top 10 (0 if none)
    ndcg@10       binary-relevance DCG of the top 10 over the best possible DCG
    accuracy@k    1 if any relevant result is in the top k, else 0 (k = 1, 5, 10): the share of queries for
                  which a search shows something to reuse; with one filed duplicate per report it is the
                  duplicate's recall, with thousands of same-topic tickets it is what recall@k cannot show
    recall@k      relevant results in the top k / relevant tickets in the corpus (k = 1, 5, 10)
    precision@10  relevant results in the top 10 / 10
    map@100       average precision over the top 100, divided by min(100, relevant tickets)

The definitions are those of sentence-transformers' InformationRetrievalEvaluator (tests check the two
agree); this module computes them for every query at once with numpy, because training evaluates them
every few hundred steps and the intervals need each query's value, which the evaluator does not return.
Changes against a baseline come with a paired bootstrap interval over queries (scipy.stats.bootstrap).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

RETRIEVAL_KEYS = ("mrr@10", "ndcg@10", "accuracy@1", "accuracy@5", "accuracy@10", "recall@1", "recall@5", "recall@10",
                  "precision@10", "map@100")
DEPTH = 100  # the deepest cut-off any metric reads (map@100)
CHUNK = 1024  # queries scored at once: 1024 x 40k float32 scores is 160 MB


def query_rows(groups: Sequence[Any], n: int | None, seed: int) -> np.ndarray:
    """Corpus rows that can be queries (their group has another member), a seeded sample of `n` (all when None)."""
    codes = pd.factorize(pd.Series(list(groups), dtype=object).astype(str))[0]
    eligible = np.flatnonzero(np.bincount(codes)[codes] >= 2)
    if n is not None and n < len(eligible):
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, n, replace=False))
    return eligible


def per_query_metrics(query_vectors: np.ndarray, query_groups: np.ndarray, corpus_vectors: np.ndarray,
                      corpus_groups: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each RETRIEVAL_KEYS metric for each query (arrays of len(queries)).

    Vectors are unit length (cosine = inner product). Groups are any comparable labels; a corpus ticket is
    relevant to a query when their groups are equal. `exclude[i]` is a corpus row left out of query i's
    ranking (the query itself), or -1 for none. Ties rank the lower corpus row first.
    """
    query_groups, corpus_groups = np.asarray(query_groups), np.asarray(corpus_groups)
    exclude = np.full(len(query_vectors), -1) if exclude is None else np.asarray(exclude)
    depth = min(DEPTH, len(corpus_vectors) - int((exclude >= 0).any()))
    relevant_total = (corpus_groups[None, :] == query_groups[:, None]).sum(axis=1) \
        - (exclude >= 0) * (corpus_groups[np.maximum(exclude, 0)] == query_groups)
    hits = []
    for start in range(0, len(query_vectors), CHUNK):
        rows = slice(start, start + CHUNK)
        scores = query_vectors[rows] @ corpus_vectors.T
        own = exclude[rows]
        scores[np.flatnonzero(own >= 0), own[own >= 0]] = -np.inf
        # The top `depth` by score, then ordered (score descending, row ascending) as the evaluator sorts.
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth] if depth < scores.shape[1] else \
            np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        hits.append(corpus_groups[top] == query_groups[rows, None])
    hit = np.concatenate(hits) if hits else np.zeros((0, depth), dtype=bool)
    total = np.maximum(relevant_total, 1)
    ranks = np.arange(1, depth + 1)
    discount = 1 / np.log2(ranks + 1)
    found = np.cumsum(hit, axis=1)
    first = np.where(hit[:, :10].any(axis=1), hit[:, :10].argmax(axis=1) + 1, np.inf)
    ideal = np.cumsum(discount[:10])[np.minimum(total, 10) - 1]
    metrics = {
        "mrr@10": np.where(np.isfinite(first), 1 / first, 0.0),
        "ndcg@10": (hit[:, :10] * discount[:10]).sum(axis=1) / ideal,
        "precision@10": found[:, min(10, depth) - 1] / 10,
        "map@100": (hit * found / ranks).sum(axis=1) / np.minimum(total, DEPTH),
    }
    for k in (1, 5, 10):
        metrics[f"recall@{k}"] = found[:, min(k, depth) - 1] / total
        metrics[f"accuracy@{k}"] = (found[:, min(k, depth) - 1] > 0).astype(float)
    return {key: metrics[key].astype(np.float64) for key in RETRIEVAL_KEYS}


def corpus_metrics(vectors: np.ndarray, groups: Sequence[Any], queries: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query metrics when the queries are corpus rows `queries`, each left out of its own ranking."""
    codes = pd.factorize(pd.Series(list(groups), dtype=object).astype(str))[0]
    return per_query_metrics(vectors[queries], codes[queries], vectors, codes, exclude=queries)


def summarise(per_query: dict[str, np.ndarray], corpus: int) -> dict[str, float]:
    """Mean of each metric over the queries, with the counts behind them."""
    out: dict[str, Any] = {key: float(np.mean(values)) if len(values) else math.nan for key, values in per_query.items()}
    out.update(n_queries=int(len(next(iter(per_query.values())))), n_corpus=int(corpus))
    return out


def mean_difference_ci(differences: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of paired per-query differences."""
    from scipy.stats import bootstrap

    differences = np.asarray(differences, dtype=float)
    if len(differences) < 2 or np.ptp(differences) == 0:
        value = float(differences.mean()) if len(differences) else math.nan
        return value, value
    result = bootstrap((differences,), np.mean, n_resamples=resamples, method="percentile", vectorized=True,
                       random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare_retrieval(model: dict[str, np.ndarray], baseline: dict[str, np.ndarray] | None, corpus: int,
                      resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`{"model", "baseline", "change"}` as for pairs: means, and per metric the change with its 95% interval."""
    result: dict[str, Any] = {"model": summarise(model, corpus)}
    if baseline is None:
        return result
    result["baseline"] = summarise(baseline, corpus)
    change: dict[str, Any] = {}
    for key in RETRIEVAL_KEYS:
        new, old = result["model"][key], result["baseline"][key]
        change[key] = new - old
        change[f"{key}_pct"] = (new - old) / abs(old) * 100 if old else math.nan
        change[f"{key}_ci95"] = list(mean_difference_ci(model[key] - baseline[key], resamples, seed))
    result["change"] = change
    return result


def check_retrieval_tickets(groups: Sequence[Any], source: str) -> None:
    """Refuse a ticket set on which retrieval means nothing: one group only (every result relevant), or no group
    with a second ticket (no query has anything to find)."""
    from tickettune.core.errors import UserError

    sizes = pd.Series(list(groups), dtype=object).astype(str).value_counts()
    if len(sizes) < 2:
        raise UserError(f"{source}: all {int(sizes.sum())} tickets are in one group, so every search result would count "
                        "as relevant; group by a finer column (--group-by)")
    if sizes.max() < 2:
        raise UserError(f"{source}: no group holds two tickets, so no query has a ticket to find; group by a coarser "
                        "column (--group-by)")
