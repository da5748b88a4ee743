"""Tickets added to a served index: VectorIndex.upsert, the store beside the ticket file, sharing it between processes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tickettune.errors import UserError
from tickettune.live_tickets import LiveTickets
from tickettune.search import VectorIndex

DIM = 16


class CountingEncoder:
    """A deterministic stand-in for a model (a unit vector from the text's hash) that counts what it encodes."""

    def __init__(self):
        self.encoded: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.encoded += texts
        vectors = np.stack([np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(DIM)
                            for t in texts]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def unit(rng, n):
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", ["exact", "ivf"])
def test_upsert_replaces_and_appends_rows(backend, tmp_path):
    if backend == "ivf":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    index = VectorIndex(unit(rng, 2000), backend=backend)
    index.save(tmp_path)
    index = VectorIndex.load(tmp_path, backend, writable=True)
    if backend == "ivf":
        index.n_probe = index.faiss_index.nlist  # every cell: results comparable with the exact scan
    new = unit(rng, 3)
    index.upsert(np.array([5, 2000, 2001]), new[:3])
    assert len(index) == 2002
    for query, row in zip(new, (5, 2000, 2001)):
        scores, rows = index.search(query, 1)
        assert rows[0][0] == row and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy")[5], VectorIndex.load(tmp_path, backend).vectors[5])
    with pytest.raises(ValueError, match="numbered from 2002"):
        index.upsert(np.array([2005]), new[:1])


def base_tickets(n=30):
    return pd.DataFrame({"number": [f"INC{i:03d}" for i in range(n)], "text": [f"ticket number {i} about thing {i % 7}"
                                                                              for i in range(n)]})


def open_live(tmp_path, encoder, tickets=None):
    model = tmp_path / "model"
    if not model.is_dir():
        model.mkdir()
        (model / "weights.bin").write_text("a model")
    live, cached = LiveTickets.open(base_tickets() if tickets is None else tickets, model, encoder, tmp_path / "store",
                                    cache_dir=tmp_path / "cache")
    return live, cached


def test_added_tickets_survive_a_restart_without_encoding_again(tmp_path):
    encoder = CountingEncoder()
    live, cached = open_live(tmp_path, encoder)
    assert not cached and len(encoder.encoded) == 30
    assert live.upsert([{"number": "INC900", "short_description": "brand new", "assignment_group": "Net"},
                        {"number": "INC003", "text": "rewritten ticket"}]) == (1, 1)
    assert encoder.encoded[30:] == ["brand new", "rewritten ticket"]
    (scores, rows), = live.search(encoder(["rewritten ticket"]), [1], [[]])
    assert live.tickets.loc[rows[0], "number"] == "INC003" and scores[0] == pytest.approx(1.0)
    assert live.tickets.loc[3, "text"] == "rewritten ticket"

    again = CountingEncoder()
    restarted, cached = open_live(tmp_path, again)
    assert cached and again.encoded == []  # the file's index from the cache, the added ones from the store
    assert len(restarted) == 31 and restarted.tickets.loc[30, "assignment_group"] == "Net"
    np.testing.assert_array_equal(restarted.index.vectors, live.index.vectors)
    lines = (tmp_path / "store" / "tickets.jsonl").read_text().splitlines()
    assert [json.loads(line)["number"] for line in lines] == ["INC900", "INC003"]


def test_two_processes_share_one_store(tmp_path):
    first, _ = open_live(tmp_path, CountingEncoder())
    encoder = CountingEncoder()
    second, _ = open_live(tmp_path, encoder)
    first.upsert([{"number": "INC500", "text": "added by the first"}])
    second.upsert([{"number": "INC501", "text": "added by the second"}])  # reads the first's line before its own
    first.refresh()
    assert encoder.encoded == ["added by the second"]  # the first's vector came from the store
    assert list(first.tickets["number"][-2:]) == list(second.tickets["number"][-2:]) == ["INC500", "INC501"]
    np.testing.assert_array_equal(first.index.vectors, second.index.vectors)


def test_damaged_store_is_repaired_not_trusted(tmp_path):
    live, _ = open_live(tmp_path, CountingEncoder())
    live.upsert([{"number": f"INC7{i}", "text": f"added {i}"} for i in range(3)])
    store = tmp_path / "store"
    (vectors,) = store.glob("vectors-*.bin")
    vectors.write_bytes(vectors.read_bytes()[:-10])  # the last vector cut short, as by a crash
    with open(store / "tickets.jsonl", "a") as handle:
        handle.write('{"number": "INC79", "te')  # a line never finished
    encoder = CountingEncoder()
    restarted, _ = open_live(tmp_path, encoder)
    assert encoder.encoded == ["added 2"] and len(restarted) == 33
    restarted.upsert([{"number": "INC80", "text": "after the crash"}])
    lines = (store / "tickets.jsonl").read_text().splitlines()
    assert [json.loads(line)["number"] for line in lines] == ["INC70", "INC71", "INC72", "INC80"]
    assert open_live(tmp_path, CountingEncoder())[0].index.vectors.shape == (34, DIM)


def test_bad_posted_tickets_name_the_ticket_and_field(tmp_path):
    live, _ = open_live(tmp_path, CountingEncoder())
    with pytest.raises(UserError, match=r"^tickets\[1\]\.number: missing or empty"):
        live.upsert([{"number": "INC1", "text": "ok"}, {"text": "no number"}])
    with pytest.raises(UserError, match=r"^tickets\[1\]: no text in short_description, description or text"):
        live.upsert([{"number": "INC1", "text": "ok"}, {"number": "INC2", "short_description": " "}])
    with pytest.raises(UserError, match=r"^tickets\[0\]: no text in"):
        live.upsert([{"number": "INC1", "summary_of_it": "x"}])
    assert len(live) == 30 and not (tmp_path / "store").exists()  # nothing half-added
