"""Filters pick the candidates before the top k (exact and FAISS IVF), and name the field when they are wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickettune.core.errors import UserError
from tickettune.serving import filters as filters_module
from tickettune.serving.filters import ColumnCache, TicketFilter, filter_options, filtered_search, parse_cli_filters
from tickettune.serving.index import VectorIndex

TICKETS = pd.DataFrame({
    "number": ["INC1", "INC2", "INC3", "INC4", "INC5"],
    "text": ["a", "b", "c", "d", "e"],
    "cmdb_ci": ["EXCH-01", "EXCH-01 ", "VPN", "EXCH-02", ""],
    "state": ["New", "Closed", "New", "New", "New"],
    "opened_at": ["2024-03-01 09:00:00", "2024-03-02 10:00:00", "", "2024-03-03T11:00:00Z", "2024-03-04"],
})


def test_values_and_time_bounds_select_rows():
    spec = TicketFilter.parse({"cmdb_ci": ["EXCH-01", "EXCH-02"], "opened_after": "2024-03-02"}, TICKETS.columns)
    assert spec.rows(TICKETS).tolist() == [1, 3]  # INC2's value is stripped; INC1 is too early, INC3 has no date
    spec = TicketFilter.parse({"state": "New", "opened_before": "2024-03-03T11:00:00+00:00"}, TICKETS.columns)
    assert spec.rows(TICKETS).tolist() == [0]  # the bound is exclusive; an empty date never passes
    assert not TicketFilter.parse({}, TICKETS.columns) and not TicketFilter.parse(None, TICKETS.columns)


def test_the_cache_follows_a_grown_table():
    cache = ColumnCache()
    spec = TicketFilter.parse({"state": "New"}, TICKETS.columns)
    assert spec.rows(TICKETS, cache).tolist() == [0, 2, 3, 4]
    grown = pd.concat([TICKETS, TICKETS.iloc[:1]], ignore_index=True)
    assert spec.rows(grown, cache).tolist() == [0, 2, 3, 4, 5]


@pytest.mark.parametrize(("spec", "message"), [
    ({"team": "x"}, "filters.team: unknown filter field; use one of cmdb_ci, state, opened_after"),
    ({"category": "x"}, "filters.category: the tickets have no category column"),
    ({"updated_after": "2024-01-01"}, "filters.updated_after: the tickets have no sys_updated_on column"),
    ({"opened_after": "last tuesday"}, "filters.opened_after: 'last tuesday' is not a date"),
    ({"state": []}, "filters.state: expected a value or a list of values"),
    ({"state": {"a": 1}}, "filters.state: expected a value"),
    ({"opened_after": "2024-03-05", "opened_before": "2024-03-01"}, "filters.opened_after: 2024-03-05T00:00:00+00:00 "
                                                                    "is not before opened_before"),
])
def test_bad_filters_name_the_field(spec, message):
    with pytest.raises(UserError) as caught:
        TicketFilter.parse(spec, TICKETS.columns)
    assert str(caught.value).startswith(message)


def test_cli_filters():
    spec = parse_cli_filters(["state=New", "state=Closed", "opened_after=2024-03-02"], TICKETS.columns)
    assert spec.values == {"state": ["New", "Closed"]} and set(spec.times) == {"opened_after"}
    with pytest.raises(UserError, match="--filter 'state': expected FIELD=VALUE"):
        parse_cli_filters(["state"], TICKETS.columns)
    with pytest.raises(UserError, match="--filter.team: unknown filter field"):
        parse_cli_filters(["team=x"], TICKETS.columns)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def brute_force(corpus: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int):
    scores = corpus[rows] @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return rows[order]


def test_exact_filtered_search_is_the_top_k_among_the_candidates():
    corpus = vectors(500)
    index = VectorIndex(corpus, backend="exact")
    rows = np.arange(0, 500, 7)
    queries = vectors(3, seed=1)
    scores, found = filtered_search(index, queries, 10, rows)
    for query, got in zip(queries, found):
        assert got.tolist() == brute_force(corpus, query, rows, 10).tolist()
    assert np.all(np.diff(scores, axis=1) <= 0)
    scores, found = filtered_search(index, queries[0], 10, np.array([3, 9]))  # fewer candidates than k: padded
    assert sorted(found[0][:2].tolist()) == [3, 9] and found[0][2:].tolist() == [-1] * 8 and np.isinf(scores[0][2:]).all()
    assert filtered_search(index, queries[0], 5, np.array([], dtype=int))[1].tolist() == [[-1] * 5]


def test_when_most_rows_pass_every_row_is_scored_and_the_rest_ruled_out():
    corpus = vectors(50)
    index = VectorIndex(corpus, backend="exact")
    rows = np.delete(np.arange(50), [4, 8, 15])
    query = vectors(1, seed=3)[0]
    assert filtered_search(index, query, 10, rows)[1][0].tolist() == brute_force(corpus, query, rows, 10).tolist()
    scores, found = filtered_search(index, query, 50, rows)  # k above the candidates: the ruled-out places padded
    assert sorted(found[0][:47].tolist()) == rows.tolist() and found[0][47:].tolist() == [-1] * 3


def test_a_filter_most_rows_pass_searches_unfiltered_and_drops_the_failures(monkeypatch):
    corpus = vectors(400)
    index = VectorIndex(corpus, backend="exact")
    query = vectors(1, seed=4)[0]
    nearest = np.argsort(-(corpus @ query), kind="stable")
    mask = np.ones(400, dtype=bool)
    mask[nearest[[0, 2, 5]]] = False  # 99% pass: a few of the best rows fail
    asked = []
    search = index.search
    monkeypatch.setattr(index, "search", lambda q, depth: asked.append(depth) or search(q, depth))
    scores, found = filtered_search(index, query, 10, mask)
    assert asked == [29]  # ceil(2 * 10 * 400 / 397) + 8: one unfiltered search, no fallback
    assert found[0].tolist() == brute_force(corpus, query, np.flatnonzero(mask), 10).tolist()
    assert np.all(np.diff(scores[0]) <= 0)
    # The 40 best rows fail (65% pass in all): the 39 over-fetched results hold none, so the candidates are scored.
    mask = np.ones(400, dtype=bool)
    mask[nearest[:40]] = False
    mask[nearest[200:300]] = False
    asked.clear()
    _, found = filtered_search(index, query, 10, mask)
    assert len(asked) == 1 and found[0].tolist() == brute_force(corpus, query, np.flatnonzero(mask), 10).tolist()
    # Row numbers and a mask are the same filter; a mask of another length is a mistake.
    assert filtered_search(index, query, 10, np.flatnonzero(mask))[1].tolist() == found.tolist()
    with pytest.raises(ValueError, match="expected a mask"):
        filtered_search(index, query, 10, mask[:-1])


def test_ivf_filtered_search_keeps_to_the_candidates(monkeypatch):
    pytest.importorskip("faiss")
    corpus = vectors(4000)
    index = VectorIndex(corpus, backend="ivf", n_probe=1000)  # every cell probed: the result is exact
    rows = np.flatnonzero(np.arange(4000) % 3 == 0)
    query = vectors(1, seed=2)[0]
    monkeypatch.setattr(filters_module, "EXACT_BELOW", 0)  # the FAISS ID-selector path even for few candidates
    _, found = filtered_search(index, query, 10, rows)
    assert found[0].tolist() == brute_force(corpus, query, rows, 10).tolist()
    monkeypatch.setattr(filters_module, "EXACT_BELOW", 10_000)  # few candidates: scored exactly
    assert filtered_search(index, query, 10, rows)[1][0].tolist() == found[0].tolist()


def test_filter_options_list_the_fields_the_tickets_have():
    assert filter_options(TICKETS) == {"cmdb_ci": ["EXCH-01", "EXCH-02", "VPN"], "state": ["Closed", "New"]}
