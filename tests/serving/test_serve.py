"""`tickettune serve`: the real server (uvicorn in a subprocess on a free port) with a tiny model and the built-in sample.

One server with a token serves the module's tests; the last test stops it and starts it again without a token
on the same store, so that tickets added before the restart must still be found. The page is driven by a real
headless browser when one is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import tickettune  # noqa: E402
from tickettune.cli import main  # noqa: E402
from tickettune.serving.live_tickets import model_key  # noqa: E402
from tickettune.serving.store import Store  # noqa: E402

TOKEN = "test-token-1234"
THRESHOLD = 0.9999  # only a text scored against itself passes it with the tiny random model
MARKUP = '<img src=x onerror="document.title=\'pwned\'"> <b>not bold</b> & printer'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`tickettune serve` in a subprocess, its output in a log file."""

    def __init__(self, args: list[str], log: Path, token: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(tickettune.__file__).parents[1]),
                                                           os.environ.get("PYTHONPATH", "")]))
        env.pop("TICKETTUNE_TOKEN", None)
        if token:
            env["TICKETTUNE_TOKEN"] = token  # the environment variable, as a deployment would pass it
        with open(log, "w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "tickettune", "serve", *args, "--port", str(self.port)],
                                            stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180  # a bound against hanging, not a measurement
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"the server did not answer /health:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    """A trained-model layout (OUT/model with OUT/metrics.json), the built-in sample as a CSV export, a cache and a store."""
    from tickettune.data.sample import generate_sample, write_sample

    root = tmp_path_factory.mktemp("serve")
    model = root / "run" / "model"
    shutil.copytree(tiny_model, model)
    (root / "run" / "metrics.json").write_text(json.dumps({"model": {"threshold": THRESHOLD}}))
    sample = generate_sample(60, seed=0)
    write_sample(sample, root / "incidents.csv")
    args = ["--model", str(model), "--tickets", str(root / "incidents.csv"), "--cache-dir", str(root / "cache")]
    return {"root": root, "model": model, "sample": sample, "args": args}


@pytest.fixture(scope="module")
def server(setup, one_thread):
    server = Server(setup["args"], setup["root"] / "server.log", token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        yield client


def one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def test_health_needs_no_token(server, setup):
    health = httpx.get(f"{server.url}/health").json()
    assert health == {"status": "ok", "model": str(setup["model"]), "tickets": 60, "threshold": THRESHOLD, "tiers": None,
                      "version": tickettune.__version__, "batching": True, "auth": True, "sync": None,
                      "encoder": "PyTorch"}


@pytest.mark.parametrize(("path", "body"), [("/similar", {"text": "vpn"}), ("/embed", {"texts": ["vpn"]}),
                                        ("/tickets", {"tickets": [{"number": "INC1", "text": "vpn"}]})])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_every_other_endpoint_needs_the_token(server, path, body, header):
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{server.url}{path}", json=body, headers=headers)
    assert one_line_error(response, 401).startswith("authorization: missing or wrong bearer token")
    assert response.headers["www-authenticate"] == "Bearer"


def test_similar_by_text_ranks_and_marks_duplicates(api, setup):
    ticket = setup["sample"].iloc[7]
    text = f"{ticket['short_description']}\n{ticket['description']}".strip()
    answer = api.post("/similar", json={"text": text, "k": 5}).json()
    assert answer["threshold"] == THRESHOLD and answer["tickets"] == 60
    hits = answer["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["number"] == ticket["number"] and hits[0]["text"] == text and hits[0]["score"] > THRESHOLD
    assert hits[0]["group"] == ticket["assignment_group"]
    assert [h["duplicate"] for h in hits] == [h["score"] >= THRESHOLD for h in hits] and hits[0]["duplicate"]
    assert not hits[1]["duplicate"]
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))


def test_similar_by_number_leaves_the_ticket_out(api, setup):
    number = setup["sample"]["number"].iloc[3]
    hits = api.post("/similar", json={"number": number, "k": 10}).json()["results"]
    assert len(hits) == 10 and number not in {h["number"] for h in hits}
    everyone = api.post("/similar", json={"number": number, "k": 100}).json()["results"]
    assert len(everyone) == 59  # k above the ticket count: every other ticket, nothing padded


def test_long_text_is_truncated_not_refused(api):
    long_text = " ".join(["the vpn client disconnects"] * 2000)  # far past the model's 64-token window
    assert api.post("/similar", json={"text": long_text, "k": 1}).status_code == 200
    assert len(api.post("/embed", json={"texts": [long_text]}).json()["vectors"][0]) == 32


def test_embed_gives_the_models_unit_vectors(api, setup):
    from sentence_transformers import SentenceTransformer

    texts = ["vpn drops every hour", "printer on floor 3 jams"]
    answer = api.post("/embed", json={"texts": texts}).json()
    assert answer["dim"] == 32 and answer["model"] == str(setup["model"])
    expected = SentenceTransformer(str(setup["model"]), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(np.array(answer["vectors"]), expected, atol=1e-5)


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/similar", b'{"text": "vpn",', 422, "body: not valid JSON"),
    ("/similar", b"", 422, "body: missing; send a JSON object"),
    ("/similar", b"[1, 2]", 422, "body: not a JSON object"),
    ("/similar", {}, 422, "text or number: send exactly one of them"),
    ("/similar", {"text": "vpn", "number": "INC0010001"}, 422, "text or number: send exactly one of them"),
    ("/similar", {"text": "   "}, 422, "text: is empty"),
    ("/similar", {"text": "vpn", "k": 10**9}, 422, "k: Input should be less than or equal to 100"),
    ("/similar", {"text": "vpn", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ("/similar", {"text": "vpn", "k": "ten"}, 422, "k: Input should be a valid integer"),
    ("/similar", {"txt": "vpn"}, 422, "txt: Extra inputs are not permitted"),
    ("/similar", {"number": "INC9999999"}, 404, "number: no ticket numbered 'INC9999999' is indexed"),
    ("/embed", {}, 422, "texts: Field required"),
    ("/embed", {"texts": []}, 422, "texts: List should have at least 1 item"),
    ("/embed", {"texts": ["vpn", ""]}, 422, "texts: item 1 is empty"),
    ("/embed", {"texts": ["vpn"] * 257}, 422, "texts: List should have at most 256 items"),
    ("/embed", {"texts": [1]}, 422, "texts[0]: Input should be a valid string"),
    ("/tickets", {"tickets": [{"text": "no number"}]}, 422, "tickets[0].number: missing or empty"),
    ("/tickets", {"tickets": [{"number": "INC5", "priority": "1"}]}, 422, "tickets[0]: no text in short_description"),
    ("/tickets", {"tickets": ["INC5"]}, 422, "tickets[0]: Input should be a valid dictionary"),
    ("/embed", {"texts": ["x" * 600_000, "y" * 600_000]}, 413, "body: more than 1048576 bytes"),
])
def test_bad_requests_get_one_line_errors_naming_the_field(api, path, body, status, error):
    if isinstance(body, bytes):
        response = api.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = api.post(path, json=body)
    assert one_line_error(response, status).startswith(error)


def test_wrong_route_method_and_content_type(api):
    assert one_line_error(api.get("/nowhere"), 404) == "no endpoint /nowhere; see /docs for the endpoints"
    assert one_line_error(api.get("/similar"), 405).startswith("GET is not allowed on /similar")
    form = api.post("/similar", content=b"text=vpn", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "Content-Type: application/json" in one_line_error(form, 422)


def test_openapi_page_documents_the_endpoints(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/similar", "/tickets", "/embed", "/health"} <= set(spec["paths"])
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_added_tickets_are_found_and_updated_without_re_encoding_the_others(api, setup):
    cache_files = {p: p.stat().st_mtime_ns for p in (setup["root"] / "cache").rglob("*") if p.is_file()}
    before = api.get("/health").json()["tickets"]
    number = setup["sample"]["number"].iloc[0]
    answer = api.post("/tickets", json={"tickets": [
        {"number": "INC0099001", "short_description": "zebra quokka badge reader", "assignment_group": "Zoo"},
        {"number": number, "short_description": "walrus stapler rewritten", "description": "second line"}]})
    assert answer.json() == {"added": 1, "updated": 1, "tickets": before + 1}
    hit = api.post("/similar", json={"text": "zebra quokka badge reader", "k": 1}).json()["results"][0]
    assert (hit["number"], hit["group"], hit["duplicate"]) == ("INC0099001", "Zoo", True)
    hit = api.post("/similar", json={"text": "walrus stapler rewritten\nsecond line", "k": 1}).json()["results"][0]
    assert hit["number"] == number and hit["text"] == "walrus stapler rewritten\nsecond line" and hit["group"] is None
    assert api.post("/similar", json={"number": "INC0099001", "k": 3}).status_code == 200
    # The file's cached index is untouched; the store holds just the posted tickets and their vectors.
    assert {p: p.stat().st_mtime_ns for p in cache_files} == cache_files
    store = Store.open(f"{setup['root'] / 'incidents.csv'}.added")
    assert [c.number for c in store.changes()] == ["INC0099001", number]
    vectors = store.vectors(model_key(setup["model"]), ["INC0099001", number])
    assert {n: len(v) for n, (_, v) in vectors.items()} == {"INC0099001": 32, number: 32}


def test_page_in_a_headless_browser(server, api, setup):
    """The page, driven by Chromium: token, query, the results table with the duplicate mark, ticket text escaped."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    api.post("/tickets", json={"tickets": [{"number": "INC0099002", "short_description": MARKUP}]}).raise_for_status()
    with sync_api.sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('status').textContent.includes('tickets')")
            status = page.inner_text("#status")
            assert f"{api.get('/health').json()['tickets']} tickets" in status and "duplicate at score >= 1.000" in status
            page.fill("#text", MARKUP)
            page.click("button[type=submit]")
            page.wait_for_selector("#error:not(:empty)")
            assert page.inner_text("#error").startswith("authorization:")  # no token typed yet
            page.fill("#token", TOKEN)
            page.fill("#k", "3")
            page.click("button[type=submit]")
            page.wait_for_selector("#results tbody tr")
            rows = page.query_selector_all("#results tbody tr")
            cells = [cell.inner_text() for cell in rows[0].query_selector_all("td")]
            # Without a calibration the tier column shows the threshold's duplicate mark; no precision.
            assert len(rows) == 3 and cells[2] == "duplicate" and cells[3] == "" and cells[4] == "INC0099002"
            assert cells[6] == MARKUP
            assert page.query_selector("#results img, #results b") is None and page.title() != "pwned"
            page.screenshot(path=str(setup["root"] / "page.png"), full_page=True)
        finally:
            browser.close()


def launch_browser(playwright):
    """Playwright's own headless Chromium if it was downloaded, else a system one (Debian's chromium-headless-shell)."""
    from playwright.sync_api import Error

    try:
        return playwright.chromium.launch()
    except Error:
        pass
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) or next(iter(Path("/usr/lib/chromium").glob(name)), None)
        if found:
            return playwright.chromium.launch(executable_path=str(found))
    pytest.skip("no headless browser installed: `make browser` installs one")


def test_restart_keeps_added_tickets_and_runs_without_token(server, api, setup):
    """Last in the module: it stops the shared server."""
    api.post("/tickets", json={"tickets": [{"number": "INC0099003", "text": "okapi toner restart check"}]}).raise_for_status()
    count = api.get("/health").json()["tickets"]
    server.stop()
    log = server.log.read_text()
    assert "okapi" not in log and "zebra" not in log and "walrus" not in log  # ticket text is never logged
    restarted = Server(setup["args"] + ["--threshold", "0.5"], setup["root"] / "restarted.log")
    try:
        health = httpx.get(f"{restarted.url}/health").json()
        assert (health["tickets"], health["auth"], health["threshold"]) == (count, False, 0.5)
        hit = httpx.post(f"{restarted.url}/similar", json={"text": "okapi toner restart check", "k": 1}).json()["results"][0]
        assert (hit["number"], hit["duplicate"]) == ("INC0099003", True)
        number = setup["sample"]["number"].iloc[0]
        kept = httpx.post(f"{restarted.url}/similar", json={"number": "INC0099001", "k": 60}).json()["results"]
        assert any(h["number"] == number and h["text"].startswith("walrus") for h in kept)
        assert "index cached" in restarted.log.read_text()
    finally:
        restarted.stop()


def test_internal_errors_are_one_line_500s_and_log_no_text(caplog):
    from fastapi.testclient import TestClient

    from tickettune.serving.app import ServeSettings, create_app

    class Broken:  # as much of an Engine as the app touches before a request fails
        live = []
        syncer = None

        def run(self, jobs):
            raise RuntimeError(f"failed on {jobs[0].text}")  # a message that quotes the ticket

    app = create_app(Broken(), ServeSettings(model="m", tickets="t", store="s"))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/similar", json={"text": "secret payroll issue"})
    assert one_line_error(response, 500) == "internal error (RuntimeError); the server log has the details"
    assert "RuntimeError" in caplog.text and "secret" not in caplog.text


def test_cli_errors_are_one_line(setup, tmp_path, capsys, monkeypatch):
    args = setup["args"]

    def error(argv) -> str:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "model 'nope' not found offline" in error(["--model", "nope", *args[2:]])
    assert "file not found" in error([*args[:2], "--tickets", str(tmp_path / "none.csv"), *args[4:]])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in error([*args, "--port", str(port)])
    assert "no column 'team'" in error([*args, "--group-column", "team"])
    assert "index backend 'annoy' is unknown" in error([*args, "--index", "annoy"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert "pip install 'tickettune[serve]'" in error(args)
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert "--every 5 minutes: expected a time such as 30s" in error([*args, "--sync-from", "https://x", "--every",
                                                                     "5 minutes"])
    for name in ("USER", "PASSWORD", "CLIENT_ID", "CLIENT_SECRET", "TOKEN"):
        monkeypatch.delenv(f"SERVICENOW_{name}", raising=False)
    assert "no ServiceNow credentials in the environment" in error([*args, "--sync-from", "https://x"])
    assert "mysql databases are not supported" in error([*args, "--store", "mysql://u@h/db"])
