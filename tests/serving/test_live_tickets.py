"""Tickets added to a served index: VectorIndex.upsert, the store (SQLite always, PostgreSQL when one answers),
sharing it between processes, migrating the old folder store and older schemas."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from _postgres import postgres_schema
from tickettune.core.errors import UserError
from tickettune.serving.index import VectorIndex
from tickettune.serving.live_tickets import LiveTickets, model_key
from tickettune.serving.store import MIGRATIONS, SCHEMA_VERSION, Store, digest, meta, open_engine, tickets

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


def test_appending_grows_a_buffer_in_place():
    rng = np.random.default_rng(1)
    index = VectorIndex(unit(rng, 100), backend="exact")
    index.upsert(np.array([100]), unit(rng, 1))
    buffer = index.vectors
    for row in range(101, 120):
        index.upsert(np.array([row]), unit(rng, 1))
    assert len(index) == 120 and np.shares_memory(buffer, index.vectors)  # no copy per added ticket
    query = index.vectors[110].copy()
    assert index.search(query, 1)[1][0][0] == 110


def base_tickets(n=30):
    return pd.DataFrame({"number": [f"INC{i:03d}" for i in range(n)], "text": [f"ticket number {i} about thing {i % 7}"
                                                                              for i in range(n)]})


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """Where the store lives: a folder (SQLite inside), or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "store")
    else:
        yield from postgres_schema()


def open_live(tmp_path, encoder, store, tickets=None):
    model = tmp_path / "model"
    if not model.is_dir():
        model.mkdir()
        (model / "weights.bin").write_text("a model")
    return LiveTickets.open(base_tickets() if tickets is None else tickets, model, encoder, store,
                            cache_dir=tmp_path / "cache")


def test_added_tickets_survive_a_restart_without_encoding_again(tmp_path, store):
    encoder = CountingEncoder()
    live, cached = open_live(tmp_path, encoder, store)
    assert not cached and len(encoder.encoded) == 30
    assert live.upsert([{"number": "INC900", "short_description": "brand new", "assignment_group": "Net"},
                        {"number": "INC003", "text": "rewritten ticket"}]) == (1, 1)
    assert encoder.encoded[30:] == ["brand new", "rewritten ticket"]
    (scores, rows), = live.search(encoder(["rewritten ticket"]), [1], [[]])
    assert live.tickets.loc[rows[0], "number"] == "INC003" and scores[0] == pytest.approx(1.0)
    assert live.tickets.loc[3, "text"] == "rewritten ticket"
    assert live.upsert([{"number": "INC900", "short_description": "brand new", "assignment_group": "Desk"}]) == (0, 1)
    assert len(encoder.encoded) == 33  # the group changed, the text did not: nothing encoded

    again = CountingEncoder()
    restarted, cached = open_live(tmp_path, again, store)
    assert cached and again.encoded == []  # the file's index from the cache, the added ones from the store
    assert len(restarted) == 31 and restarted.tickets.loc[30, "assignment_group"] == "Desk"
    np.testing.assert_array_equal(restarted.index.vectors, live.index.vectors)
    assert [c.number for c in restarted.store.changes()] == ["INC003", "INC900"]


def test_two_processes_share_one_store(tmp_path, store):
    first, _ = open_live(tmp_path, CountingEncoder(), store)
    encoder = CountingEncoder()
    second, _ = open_live(tmp_path, encoder, store)
    first.upsert([{"number": "INC500", "text": "added by the first"}])
    second.upsert([{"number": "INC501", "text": "added by the second"}])  # takes in the first's ticket before its own
    first.refresh()
    assert encoder.encoded == ["added by the second"]  # the first's vector came from the store
    assert list(first.tickets["number"][-2:]) == list(second.tickets["number"][-2:]) == ["INC500", "INC501"]
    np.testing.assert_array_equal(first.index.vectors, second.index.vectors)
    assert second.delete(["INC500", "INC007"]) == 2
    first.refresh()
    assert "INC500" not in first.rows_of and len(first) == len(second) == 30
    (scores, rows), = first.search(encoder(["added by the first"]), [3], [[]])
    assert 30 not in rows and 7 not in rows  # deleted tickets are never found


def test_a_store_of_another_model_gets_its_own_vectors(tmp_path, store):
    first, _ = open_live(tmp_path, CountingEncoder(), store)
    first.upsert([{"number": "INC500", "text": "added under model one"}])
    (tmp_path / "model" / "weights.bin").write_text("another model, another fingerprint")
    encoder = CountingEncoder()
    other, _ = open_live(tmp_path, encoder, store)
    assert encoder.encoded[-1] == "added under model one" and len(other) == 31
    again = CountingEncoder()
    open_live(tmp_path, again, store)
    assert again.encoded == []  # its vectors were kept under its own model key


def test_a_refused_index_check_comes_before_the_store_is_encoded(tmp_path):
    first, _ = open_live(tmp_path, CountingEncoder(), str(tmp_path / "store"))
    first.upsert([{"number": "INC500", "text": "added under model one"}])
    (tmp_path / "model" / "weights.bin").write_text("another model, another fingerprint")
    encoder, checked = CountingEncoder(), []

    def refuse(index, cached):
        checked.append((len(index), cached))
        raise UserError("another model's index")

    with pytest.raises(UserError, match="another model's index"):
        LiveTickets.open(base_tickets(), tmp_path / "model", encoder, str(tmp_path / "store"),
                         cache_dir=tmp_path / "cache", check_index=refuse)
    # The file's index was built by this encoder (a new model's entry); the store's ticket, which has no vector under
    # this model, was not encoded before the refusal.
    assert checked == [(30, False)] and "added under model one" not in encoder.encoded


def test_old_folder_store_is_imported_once_and_left_in_place(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    lines = [{"number": "INC70", "text": "old one"}, {"number": "INC71", "text": "old two"},
             {"number": "INC70", "text": "old one, edited"}, {"number": "INC003", "text": "old replaces file"}]
    (folder / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"number": "INC79", "te')
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_text("a model")
    encoder = CountingEncoder()
    record = np.dtype([("digest", "S8"), ("vector", "<f4", (DIM,))])
    stored = np.zeros(3, record)  # the old layout: one per line; the last line's vector missing, as after a crash
    stored["digest"] = [digest(r["text"]) for r in lines[:3]]
    stored["vector"] = encoder([r["text"] for r in lines[:3]])
    stored.tofile(folder / f"vectors-{model_key(model)}.bin")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    encoder.encoded.clear()
    live, _ = open_live(tmp_path, encoder, str(folder))
    assert len(live) == 32 and live.tickets.loc[3, "text"] == "old replaces file"
    assert live.tickets.loc[live.rows_of["INC70"][0], "text"] == "old one, edited"
    assert sorted(encoder.encoded[30:]) == ["old replaces file"]  # the others' vectors came from the old file
    again = CountingEncoder()
    restarted, _ = open_live(tmp_path, again, str(folder))
    assert again.encoded == [] and len(restarted) == 32 and len(restarted.store.changes()) == 3  # not imported twice
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before


def test_an_older_schema_is_upgraded_and_a_newer_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = open_engine(url)
    with engine.begin() as conn:  # a store written by the first schema version
        meta.create(conn)
        MIGRATIONS[0](conn)
        conn.execute(meta.insert().values(key="schema_version", value="1"))
        conn.execute(tickets.insert().values(number="INC1", seq=1, fields=json.dumps({"number": "INC1", "text": "t"}),
                                             deleted=False, source="posted", changed_at=pd.Timestamp.now(tz="UTC")))
    engine.dispose()
    store = Store.open(url)
    assert store.schema_version() == SCHEMA_VERSION == 2 and [c.number for c in store.changes()] == ["INC1"]
    assert store.sync_state("x") is None  # the table version 2 added
    with store.engine.begin() as conn:
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="99"))
    store.close()
    with pytest.raises(UserError, match="schema version 99, newer than this tickettune's 2; upgrade tickettune"):
        Store.open(url)


def test_store_locations_and_bad_urls(tmp_path):
    from tickettune.serving.store import store_url

    assert store_url(str(tmp_path / "x.sqlite")) == (f"sqlite:///{tmp_path / 'x.sqlite'}", None)
    assert store_url(str(tmp_path / "folder")) == (f"sqlite:///{tmp_path / 'folder' / 'store.sqlite'}", tmp_path / "folder")
    assert store_url("postgresql://u:p@db.example/tickets")[0] == "postgresql+psycopg://u:p@db.example/tickets"
    with pytest.raises(UserError, match="mysql databases are not supported"):
        store_url("mysql://u@db/x")
    with pytest.raises(UserError, match=r"^cannot use the store postgresql\+psycopg://nobody:\*\*\*@127.0.0.1:9/x"):
        Store.open("postgresql://nobody:secret@127.0.0.1:9/x?connect_timeout=2")


def test_bad_posted_tickets_name_the_ticket_and_field(tmp_path):
    live, _ = open_live(tmp_path, CountingEncoder(), str(tmp_path / "store"))
    with pytest.raises(UserError, match=r"^tickets\[1\]\.number: missing or empty"):
        live.upsert([{"number": "INC1", "text": "ok"}, {"text": "no number"}])
    with pytest.raises(UserError, match=r"^tickets\[1\]: no text in short_description, description or text"):
        live.upsert([{"number": "INC1", "text": "ok"}, {"number": "INC2", "short_description": " "}])
    with pytest.raises(UserError, match=r"^tickets\[0\]: no text in"):
        live.upsert([{"number": "INC1", "summary_of_it": "x"}])
    assert len(live) == 30 and live.store.changes() == []  # nothing half-added
