"""`serve --sync-from`: changes read from the Table API stand-in (over real HTTP) reach the served index, only
changed texts are encoded, deletions leave the results, a failed sync keeps the last good index; and real
`serve` processes sharing one store (PostgreSQL when one answers) see each other's tickets and lose nothing
acknowledged when one is killed mid-write."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from test_live_tickets import CountingEncoder  # noqa: E402
from test_serve import Server  # noqa: E402

from _postgres import postgres_schema  # noqa: E402
from _standin import PASSWORD, USER, new_instance  # noqa: E402
from tickettune.serving.live_tickets import LiveTickets  # noqa: E402
from tickettune.serving.search import read_ticket_file  # noqa: E402
from tickettune.serving.store import Store  # noqa: E402
from tickettune.serving.sync import Syncer, parse_every, parse_source  # noqa: E402
from tickettune.sources.pull import Source, pull  # noqa: E402
from tickettune.sources.servicenow import Credentials, TableClient  # noqa: E402
from tickettune.sources.servicenow_standin import StandinServer  # noqa: E402

CREDENTIALS = Credentials(user=USER, password=PASSWORD)


@pytest.fixture
def pulled(tmp_path):
    """A stand-in with 120 incidents, pulled into a ticket file as `tickettune pull` writes it."""
    instance = new_instance(120)
    with StandinServer(instance) as server:
        out = tmp_path / "incidents.json"
        with TableClient(server.url, CREDENTIALS) as client:
            pull(client, Source(instance=server.url), out)
        yield server, instance, out


def run(coroutine):
    return asyncio.run(coroutine)


def direct(live):
    async def submit(call):
        return call(live)
    return submit


def open_synced(tmp_path, out, encoder, url):
    model = tmp_path / "model"
    if not model.is_dir():
        model.mkdir()
        (model / "weights.bin").write_text("a model")
    live, _ = LiveTickets.open(read_ticket_file(out).frame, model, encoder, str(tmp_path / "store"),
                               cache_dir=tmp_path / "cache")
    return live, Syncer(parse_source(url), CREDENTIALS, live.store, every=60, tickets_file=out)


def test_sync_encodes_only_changed_texts_and_removes_deleted(pulled, tmp_path):
    server, instance, out = pulled
    encoder = CountingEncoder()
    live, syncer = open_synced(tmp_path, out, encoder, server.url)
    assert len(live) == 120 and len(encoder.encoded) == 120
    ids = list(instance.tables["incident"])
    instance.update("incident", ids[0], short_description="printer toner smeared")
    instance.update("incident", ids[1], state="7")  # a new state, the same text
    instance.delete("incident", ids[2])
    status = run(syncer.sync_now(direct(live)))
    assert status["last_error"] is None and status["changed"] == 2 and status["removed"] == 1
    assert encoder.encoded[120:] == ["printer toner smeared\nUser reports: " + instance.tables["incident"][ids[0]]
                                     ["description"].split("User reports: ")[1]]
    number = {s: r["number"] for s, r in instance.tables["incident"].items()}
    (scores, rows), = live.search(encoder([encoder.encoded[-1]]), [1], [[]])
    assert live.tickets.loc[rows[0], "number"] == number[ids[0]]
    assert len(live) == 119 and live.tickets.loc[live.rows_of[number[ids[1]]][0], "state"] == "Closed"
    assert status["mark"] > "2025" and status["lag_seconds"] is not None
    # Nothing changed: nothing encoded, the mark kept in the store for the next process.
    encoded = len(encoder.encoded)
    assert run(syncer.sync_now(direct(live)))["changed"] == 0 and len(encoder.encoded) == encoded
    assert live.store.sync_state(syncer.key)["mark_updated_on"] == status["mark"]


def test_failed_sync_keeps_the_index_and_says_why(pulled, tmp_path):
    server, instance, out = pulled
    live, syncer = open_synced(tmp_path, out, CountingEncoder(), server.url)
    instance.break_next("<html>hibernating</html>")
    status = run(syncer.sync_now(direct(live)))
    assert "is not Table API JSON (text/html" in status["last_error"] and status["last_success_at"] is None
    assert len(live) == 120
    assert run(syncer.sync_now(direct(live)))["last_error"] is None


def test_sync_from_urls_and_intervals():
    source = parse_source("https://acme.service-now.com/api/now/table/problem?sysparm_query=active%3Dtrue")
    assert (source.instance, source.table, source.query) == ("https://acme.service-now.com", "problem", "active=true")
    assert parse_source("acme.service-now.com/").table == "incident"
    assert [parse_every(t) for t in ("30s", "5m", "1h", "90")] == [30, 300, 3600, 90]


def wait_for_first_sync(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sync = httpx.get(f"{url}/health").json()["sync"]
        if sync["last_attempt_at"] and not sync["running"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url}: the start-up sync did not finish in {seconds} s")


@pytest.fixture
def shared_store(tmp_path):
    """PostgreSQL when a server answers (the deployment the test is about), else one SQLite file (one host)."""
    schemas = postgres_schema()
    try:
        yield next(schemas)
    except pytest.skip.Exception:
        yield str(tmp_path / "shared.sqlite")
        return
    yield from schemas


def test_two_servers_share_a_store_sync_and_a_killed_one_loses_nothing_acknowledged(pulled, shared_store, tiny_model,
                                                                                    tmp_path, one_thread, monkeypatch):
    server, instance, out = pulled
    monkeypatch.setenv("SERVICENOW_USER", USER)
    monkeypatch.setenv("SERVICENOW_PASSWORD", PASSWORD)
    args = ["--model", str(tiny_model), "--tickets", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--store", shared_store, "--sync-from", server.url, "--every", "1h"]
    with ThreadPoolExecutor(2) as starting:  # both load at once: half the wait
        first, second = starting.map(lambda name: Server(args, tmp_path / f"{name}.log"), ["first", "second"])
    try:
        # Each server syncs once as it starts; the change below must come after both of those syncs, or one of
        # them could apply it first (a race a loaded machine loses: /health answers before the first sync ends).
        for one in (first, second):
            wait_for_first_sync(one.url)
        health = httpx.get(f"{first.url}/health").json()
        assert health["tickets"] == 120 and health["sync"]["source"].startswith(server.url)
        ids = list(instance.tables["incident"])
        instance.update("incident", ids[3], short_description="okapi badge reader", description="")
        instance.delete("incident", ids[4])
        status = httpx.post(f"{first.url}/sync", timeout=60).json()
        assert (status["changed"], status["removed"], status["last_error"]) == (1, 1, None)
        # The other process takes in what the first synced or was posted before its next request.
        posted = httpx.post(f"{first.url}/tickets", json={"tickets": [{"number": "INC0077001",
                                                                         "text": "quokka scanner jammed"}]})
        assert posted.json()["added"] == 1
        for text, number in (("okapi badge reader", instance.tables["incident"][ids[3]]["number"]),
                             ("quokka scanner jammed", "INC0077001")):
            hit = httpx.post(f"{second.url}/similar", json={"text": text, "k": 1}).json()["results"][0]
            assert hit["number"] == number and hit["score"] > 0.999
        assert httpx.get(f"{second.url}/health").json()["tickets"] == 120

        acknowledged, stop = [], threading.Event()

        def keep_posting():
            with httpx.Client(base_url=second.url, timeout=30) as client:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        answer = client.post("/tickets", json={"tickets": [{"number": f"INC08{i:05d}",
                                                                            "text": f"added while killed {i}"}]})
                    except httpx.TransportError:
                        return
                    if answer.status_code == 200:
                        acknowledged.append(f"INC08{i:05d}")

        writer = threading.Thread(target=keep_posting)
        writer.start()
        while len(acknowledged) < 15 and writer.is_alive():
            threading.Event().wait(0.05)
        second.process.send_signal(signal.SIGKILL)  # mid-stream: a write may be half done
        second.process.wait()
        stop.set()
        writer.join()
        assert len(acknowledged) >= 15
        store = Store.open(shared_store)
        kept = {c.number for c in store.changes()}
        store.close()
        assert set(acknowledged) <= kept
        # The survivor sees every acknowledged ticket of the killed one.
        for number in acknowledged:
            found = httpx.post(f"{first.url}/similar", json={"number": number, "k": 1})
            assert found.status_code == 200, found.text
    finally:
        first.stop()
        second.stop()
