import numpy as np
import pytest

from tickettune.evaluation.retrieval import (
    RETRIEVAL_KEYS,
    compare_retrieval,
    corpus_metrics,
    mean_difference_ci,
    per_query_metrics,
    query_rows,
)


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_metrics_worked_by_hand():
    # One query of group "a"; the corpus ranked by cosine is d0 (b), d1 (a), d2 (b), d3 (a); two relevant.
    # mrr@10 = 1/2; precision@10 = 2/10; recall@1 = 0, recall@5 = recall@10 = 1;
    # ndcg@10 = (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3)); map@100 = (1/2 + 2/4) / 2.
    query = unit([[1, 0]])
    corpus = unit([[1, 0.1], [1, 0.3], [1, 0.5], [1, 0.7]])
    got = per_query_metrics(query, np.array(["a"]), corpus, np.array(["b", "a", "b", "a"]))
    assert got["mrr@10"][0] == pytest.approx(0.5)
    assert got["precision@10"][0] == pytest.approx(0.2)
    assert got["recall@1"][0] == 0 and got["recall@5"][0] == 1 and got["recall@10"][0] == 1
    # accuracy@k: a relevant result anywhere in the top k (d1 at rank 2).
    assert got["accuracy@1"][0] == 0 and got["accuracy@5"][0] == 1 and got["accuracy@10"][0] == 1
    assert got["ndcg@10"][0] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    assert got["map@100"][0] == pytest.approx(0.5)


def test_query_left_out_of_its_own_ranking():
    # Corpus tickets as queries: ticket 0 would find itself first; left out, its nearest is ticket 1 (same group).
    vectors = unit([[1, 0], [1, 0.2], [0, 1], [0.1, 1]])
    got = corpus_metrics(vectors, ["x", "x", "y", "y"], np.arange(4))
    assert np.allclose(got["mrr@10"], 1.0)
    assert np.allclose(got["recall@1"], 1.0)  # one other member each, found first
    assert np.allclose(got["precision@10"], 0.1)  # 3 results, 1 relevant, over a cut-off of 10


def test_matches_information_retrieval_evaluator():
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rng = np.random.default_rng(3)
    corpus_groups = rng.integers(0, 4, 150)
    query_groups = rng.integers(0, 4, 25)
    corpus, queries = unit(rng.normal(size=(150, 8))), unit(rng.normal(size=(25, 8)))
    ours = per_query_metrics(queries, query_groups, corpus, corpus_groups)

    evaluator = InformationRetrievalEvaluator(
        queries={f"q{i}": f"q{i}" for i in range(25)}, corpus={f"d{j:03d}": f"d{j:03d}" for j in range(150)},
        relevant_docs={f"q{i}": {f"d{j:03d}" for j in np.flatnonzero(corpus_groups == g)} for i, g in enumerate(query_groups)},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 5, 10], precision_recall_at_k=[1, 5, 10], map_at_k=[100],
        show_progress_bar=False)
    theirs = evaluator.compute_metrics(evaluator_results(queries, corpus))
    assert np.mean(ours["mrr@10"]) == pytest.approx(theirs["mrr@k"][10])
    assert np.mean(ours["ndcg@10"]) == pytest.approx(theirs["ndcg@k"][10])
    assert np.mean(ours["map@100"]) == pytest.approx(theirs["map@k"][100])
    for k in (1, 5, 10):
        assert np.mean(ours[f"recall@{k}"]) == pytest.approx(theirs["recall@k"][k])
        assert np.mean(ours[f"accuracy@{k}"]) == pytest.approx(theirs["accuracy@k"][k])
    assert np.mean(ours["precision@10"]) == pytest.approx(theirs["precision@k"][10])


def evaluator_results(queries, corpus):
    """What InformationRetrievalEvaluator ranks from: every corpus score per query."""
    scores = queries @ corpus.T
    return [[{"corpus_id": f"d{j:03d}", "score": float(s)} for j, s in enumerate(row)] for row in scores]


def test_query_rows_only_groups_with_another_member():
    rows = query_rows(["a", "b", "a", "c", "c", "c"], None, 0)
    assert rows.tolist() == [0, 2, 3, 4, 5]
    sample = query_rows(["a", "b", "a", "c", "c", "c"], 3, 0)
    assert len(sample) == 3 and set(sample) <= {0, 2, 3, 4, 5}
    assert sample.tolist() == query_rows(["a", "b", "a", "c", "c", "c"], 3, 0).tolist()


def test_compare_gives_changes_with_intervals():
    model = {key: np.linspace(0.5, 1.0, 40) for key in RETRIEVAL_KEYS}
    base = {key: np.linspace(0.5, 1.0, 40) - 0.1 for key in RETRIEVAL_KEYS}
    result = compare_retrieval(model, base, corpus=100)
    assert result["model"]["n_queries"] == 40 and result["model"]["n_corpus"] == 100
    for key in RETRIEVAL_KEYS:
        assert result["change"][key] == pytest.approx(0.1)
        # Every query improves by exactly 0.1, so every resample's mean does too.
        assert result["change"][f"{key}_ci95"] == pytest.approx([0.1, 0.1])


def test_interval_of_a_noisy_mean_difference_covers_it():
    rng = np.random.default_rng(0)
    differences = rng.normal(0.05, 0.2, 2000)
    low, high = mean_difference_ci(differences)
    assert low < differences.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * 0.2 / np.sqrt(2000), rel=0.2)
