"""`tickettune pull` against the Table API stand-in over real HTTP (uvicorn on 127.0.0.1 in a thread).

The stand-in follows the Table API's documented behaviour (servicenow_standin's docstring lists it); these
tests check both that it does and that pull reads it right: paging while records change and vanish between
pages, Retry-After, display values, OAuth, the incremental merge and one-line failures that keep the file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import tickettune  # noqa: E402
from _standin import PASSWORD, USER, new_instance  # noqa: E402
from tickettune.cli import main  # noqa: E402
from tickettune.core.errors import UserError  # noqa: E402
from tickettune.data.tickets import read_tickets  # noqa: E402
from tickettune.sources.pull import Source, fetch_changes  # noqa: E402
from tickettune.sources.servicenow import Credentials, TableClient, keyset_query  # noqa: E402
from tickettune.sources.servicenow_standin import StandinServer, make_incidents  # noqa: E402


@pytest.fixture
def standin():
    with StandinServer(new_instance()) as server:
        yield server


@pytest.fixture
def credentials(monkeypatch):
    for name in ("USER", "PASSWORD", "CLIENT_ID", "CLIENT_SECRET", "TOKEN"):
        monkeypatch.delenv(f"SERVICENOW_{name}", raising=False)
    monkeypatch.setenv("SERVICENOW_USER", USER)
    monkeypatch.setenv("SERVICENOW_PASSWORD", PASSWORD)


def run_pull(capsys, server, out: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["pull", "--instance", server.url, "-o", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def numbers(path: Path) -> list[str]:
    return [r["number"]["value"] for r in json.loads(path.read_text())["result"]]


# --- the stand-in follows the documentation ---

def test_standin_pages_with_link_and_total_headers_and_caps_the_limit(standin):
    auth = (USER, PASSWORD)
    url = f"{standin.url}/api/now/table/incident"
    first = httpx.get(url, params={"sysparm_limit": "100", "sysparm_query": "ORDERBYnumber"}, auth=auth)
    assert first.headers["X-Total-Count"] == "250" and len(first.json()["result"]) == 100
    links = {part.split(";rel=")[1].strip('"'): part.split(">")[0].lstrip("<") for part in first.headers["Link"].split(",")}
    assert set(links) == {"first", "next", "last"} and "sysparm_offset=100" in links["next"]
    assert "sysparm_offset=200" in links["last"]
    second = httpx.get(links["next"], auth=auth).json()["result"]
    assert second[0]["number"] == "INC0000101"
    capped = httpx.get(url, params={"sysparm_limit": "50000"}, auth=auth)
    assert len(capped.json()["result"]) == 250  # under the 10,000 cap: all of them
    assert httpx.get(url, auth=("nobody", "x")).status_code == 401
    assert httpx.get(f"{standin.url}/api/now/table/incidnet", auth=auth).json()["error"]["message"] == \
        "Invalid table incidnet"


def test_standin_display_values_and_reference_objects(standin):
    auth = (USER, PASSWORD)
    url = f"{standin.url}/api/now/table/incident"
    params = {"sysparm_query": "number=INC0000001", "sysparm_fields": "number,state,assignment_group"}
    raw = httpx.get(url, params=params, auth=auth).json()["result"][0]
    shown = httpx.get(url, params={**params, "sysparm_display_value": "true"}, auth=auth).json()["result"][0]
    both = httpx.get(url, params={**params, "sysparm_display_value": "all"}, auth=auth).json()["result"][0]
    group = both["assignment_group"]
    assert set(group) == {"display_value", "value", "link"} and group["display_value"] in ("Network", "Service Desk",
                                                                                           "Desktop")
    assert raw["assignment_group"] == {"link": group["link"], "value": group["value"]}
    assert shown["assignment_group"] == {"display_value": group["display_value"], "link": group["link"]}
    assert both["state"]["value"] == raw["state"] and both["state"]["display_value"] == shown["state"] != raw["state"]
    assert list(raw) == ["number", "state", "assignment_group"]


def test_standin_encoded_query_or_nq_and_ordering(standin):
    auth = (USER, PASSWORD)
    url = f"{standin.url}/api/now/table/incident"

    def found(query):
        return [r["number"] for r in httpx.get(url, params={"sysparm_query": query, "sysparm_fields": "number"},
                                               auth=auth).json()["result"]]

    assert found("number=INC0000003^ORnumber=INC0000001^ORDERBYnumber") == ["INC0000001", "INC0000003"]
    assert found("number=INC0000003^NQnumber=INC0000001^ORDERBYDESCnumber") == ["INC0000003", "INC0000001"]
    assert found("number>=INC0000249^ORDERBYnumber") == ["INC0000249", "INC0000250"]
    assert len(found("no_such_field=1")) == 250  # ignored, as an instance does by default


# --- pull ---

def test_full_pull_reads_every_record_once_while_records_change_and_vanish(tmp_path, capsys, credentials):
    instance = new_instance(400, same_second=30)  # 30 records per second: pages must tell ties apart by sys_id
    ids = list(instance.tables["incident"])
    changed, deleted = ids[5:25], ids[300:305]

    def between_pages(instance):
        # Early records change (moving behind the read), late ones vanish before they are read.
        if instance.requests == 2:
            for sys_id in changed:
                instance.update("incident", sys_id, short_description="changed mid-read")
            for sys_id in deleted:
                instance.delete("incident", sys_id)

    instance.after_page = between_pages
    out = tmp_path / "incidents.json"
    with StandinServer(instance) as server:
        code, stdout, err = run_pull(capsys, server, out, "--page-size", "40")
    assert code == 0, err
    data = json.loads(out.read_text())
    got = [r["sys_id"]["value"] for r in data["result"]]
    assert len(got) == len(set(got)) == 395 and set(got) == set(ids) - set(deleted)
    texts = {r["sys_id"]["value"]: r["short_description"]["value"] for r in data["result"]}
    assert all(texts[s] == "changed mid-read" for s in changed)
    assert "395 records" in stdout
    assert data["pull"]["mark"]["updated_on"] > "2025"  # the newest change (stamped now) is the mark


def test_offset_paging_would_skip_records(tmp_path):
    """The failure keyset paging avoids: an offset reader loses one record per read record that changes."""
    instance = new_instance(200)
    ids = list(instance.tables["incident"])

    def between_pages(instance):
        if instance.requests == 1:
            for sys_id in ids[:10]:  # already read: they move to the end, the unread ones shift back past the offset
                instance.update("incident", sys_id, short_description="moved")

    instance.after_page = between_pages
    with StandinServer(instance) as server:
        seen = []
        for offset in range(0, 200, 50):
            page = httpx.get(f"{server.url}/api/now/table/incident", auth=(USER, PASSWORD), params={
                "sysparm_query": "ORDERBYsys_updated_on^ORDERBYsys_id", "sysparm_limit": "50",
                "sysparm_offset": str(offset), "sysparm_fields": "sys_id"}).json()["result"]
            seen += [r["sys_id"] for r in page]
    assert len(set(seen)) == 190  # ten records were never read


def test_since_last_fetches_only_changes_and_marks_removed_records(tmp_path, capsys, credentials):
    instance = new_instance(300)
    out = tmp_path / "incidents.json"
    with StandinServer(instance) as server:
        assert run_pull(capsys, server, out, "--query", "active=true")[0] == 0
        active = numbers(out)
        ids = {r["sys_id"]["value"]: r for r in json.loads(out.read_text())["result"]}
        first, second, third = list(ids)[:3]
        instance.update("incident", first, short_description="new words")
        instance.update("incident", second, active="false", state="7")  # leaves the query
        instance.delete("incident", third)
        new = make_incidents(1, instance.group_ids, seed=9)[0]
        instance.add_incidents([dict(new, number="INC0999999", active="true", sys_updated_on="2026-01-01 00:00:00")])
        served = instance.records_served
        code, stdout, err = run_pull(capsys, server, out, "--query", "active=true", "--since-last")
        assert code == 0, err
        fetched = instance.records_served - served
    data = json.loads(out.read_text())
    merged = {r["sys_id"]["value"]: r for r in data["result"]}
    assert merged[first]["short_description"]["value"] == "new words"
    assert second not in merged and third not in merged and "INC0999999" in {r["number"]["value"] for r in data["result"]}
    assert {r["sys_id"] for r in data["removed"]} == {second, third}
    assert len(merged) == len(active) - 2 + 1
    assert "2 new or changed, 2 removed" in stdout
    # The changed and the new record, plus the sys_id listing (two fields a record), nothing else in full.
    assert fetched <= 2 + len(active) + 5
    # The merged file is a ticket file as any other, display values as text.
    tickets = read_tickets(out, group_by="assignment_group").frame
    assert set(tickets["assignment_group"]) <= {"Network", "Service Desk", "Desktop"}
    assert "new words" in set(tickets["text"].str.split("\n").str[0])


def test_retries_honour_retry_after(standin):
    waits = []
    standin.instance.throttle(2, retry_after=3)
    client = TableClient(standin.url, Credentials(user=USER, password=PASSWORD), sleep=waits.append)
    pages = list(client.read("incident", page_size=100))
    assert sum(len(p) for p in pages) == 250 and waits == [3.0, 3.0] and client.retried == 2
    standin.instance.throttle(10, retry_after=1)
    client = TableClient(standin.url, Credentials(user=USER, password=PASSWORD), sleep=waits.append, retries=3)
    with pytest.raises(UserError, match="kept answering 429 after 3 retries"):
        list(client.read("incident"))


@pytest.mark.parametrize("env", [{"SERVICENOW_CLIENT_ID": "client-1", "SERVICENOW_CLIENT_SECRET": "client-secret",
                                  "SERVICENOW_USER": USER, "SERVICENOW_PASSWORD": PASSWORD},
                                 {"SERVICENOW_CLIENT_ID": "client-1", "SERVICENOW_CLIENT_SECRET": "client-secret"}],
                         ids=["password-grant", "client-credentials"])
def test_oauth_from_the_environment(standin, env):
    client = TableClient(standin.url, Credentials.from_environment(env))
    assert sum(len(p) for p in client.read("incident", page_size=1000)) == 250
    assert standin.instance.tokens
    with pytest.raises(UserError, match="OAuth token request was refused"):
        list(TableClient(standin.url, Credentials.from_environment({**env, "SERVICENOW_CLIENT_SECRET": "no"}))
             .read("incident"))


def test_missing_credentials_say_which_variables():
    with pytest.raises(UserError, match="^no ServiceNow credentials in the environment; set SERVICENOW_USER"):
        Credentials.from_environment({})
    with pytest.raises(UserError, match="^SERVICENOW_PASSWORD is not set"):
        Credentials.from_environment({"SERVICENOW_USER": "x"})


def test_keyset_query_repeats_the_users_query_in_each_half():
    from tickettune.sources.servicenow import Mark

    assert keyset_query("active=true", None) == "active=true^ORDERBYsys_updated_on^ORDERBYsys_id"
    assert keyset_query("active=true", Mark("2024-01-01 00:00:00", "ab")) == (
        "active=true^sys_updated_on>2024-01-01 00:00:00^NQactive=true^sys_updated_on=2024-01-01 00:00:00"
        "^sys_id>ab^ORDERBYsys_updated_on^ORDERBYsys_id")


@pytest.mark.parametrize("case", ["unreachable", "credentials", "table", "malformed", "query"])
def test_bad_input_is_one_line_exit_2_and_keeps_the_file(case, standin, tmp_path, capsys, credentials, monkeypatch):
    out = tmp_path / "incidents.json"
    assert run_pull(capsys, standin, out, "--query", "active=true")[0] == 0
    before = out.read_bytes()
    extra = ["--query", "active=true", "--since-last"]
    server = standin
    if case == "unreachable":
        class Closed:
            url = "http://127.0.0.1:9"  # discard port: nothing listens

        server, expected = Closed(), "cannot reach the ServiceNow instance"
        extra = ["--query", "active=true"]
    elif case == "credentials":
        monkeypatch.setenv("SERVICENOW_PASSWORD", "wrong")
        expected = "refused the credentials (401: User Not Authenticated)"
    elif case == "table":
        extra, expected = ["--table", "incidnet"], "there is no table 'incidnet' (404: Invalid table incidnet)"
    elif case == "malformed":
        standin.instance.break_next("<html><body>Your instance is hibernating</body></html>")
        expected = "is not Table API JSON (text/html"
    else:
        extra, expected = ["--query", "active=true^ORDERBYnumber"], "holds an ORDERBY"
    code, _, err = run_pull(capsys, server, out, *extra)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert PASSWORD not in err and "wrong" not in err
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["incidents.json"]


def test_a_killed_pull_leaves_the_previous_file(tmp_path):
    instance = new_instance(600)
    out = tmp_path / "incidents.json"
    env = dict(os.environ, SERVICENOW_USER=USER, SERVICENOW_PASSWORD=PASSWORD,
               PYTHONPATH=os.pathsep.join([str(Path(tickettune.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    with StandinServer(instance) as server:
        command = [sys.executable, "-m", "tickettune", "pull", "--instance", server.url, "-o", str(out),
                   "--page-size", "50"]
        subprocess.run(command, env=env, check=True, capture_output=True)
        before = out.read_bytes()
        instance.after_page = lambda instance: time.sleep(0.3)  # a slow instance: the pull is mid-read when killed
        start = instance.requests
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while instance.requests < start + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert out.read_bytes() == before


def test_fetch_changes_skips_versions_it_has(standin):
    client = TableClient(standin.url, Credentials(user=USER, password=PASSWORD))
    source = Source(instance=standin.url, page_size=100)
    everything = fetch_changes(client, source, since=None, versions={})
    versions = {s: r["sys_updated_on"]["value"] for s, r in everything.records.items()}
    again = fetch_changes(client, source, since=everything.mark, versions=versions)
    assert len(everything.records) == 250 and again.records == {} and again.unchanged >= 1
