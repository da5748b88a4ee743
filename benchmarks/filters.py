"""Filtered `/similar` against unfiltered, on a `tickettune serve` holding 100,000 tickets.

The tickets are the built-in sample (`--unique` distinct incidents, repeated with new numbers up to
`--tickets` rows, their opening dates spread over a year), so only the distinct texts are encoded to fill the
server's index cache before it starts; the server's work per request is that of 100,000 tickets. One client
asks in turns, one request of each filter per turn (so load from other work falls on all of them alike), by
text of another draw of the sample: encode, filter, score, top 10, reasons. Latency is measured at the client.

    python benchmarks/filters.py                                     # appends to RESULTS.md
    python benchmarks/filters.py --tickets 20000 --turns 50 --no-record
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _results import append_under  # noqa: E402
from tickettune.core.models import load_model, resolve_model  # noqa: E402
from tickettune.core.similarity import encode_texts  # noqa: E402
from tickettune.data.sample import generate_sample  # noqa: E402
from tickettune.serving.index import IndexCache  # noqa: E402
from tickettune.serving.search import read_ticket_file  # noqa: E402

COLUMNS = ["number", "opened_at", "short_description", "description", "assignment_group", "cmdb_ci", "category",
           "state"]


def write_tickets(path: Path, n: int, unique: int, seed: int) -> pd.DataFrame:
    base = generate_sample(unique, seed)[COLUMNS]
    frame = pd.concat([base] * -(-n // unique), ignore_index=True).head(n)
    frame["number"] = [f"INC{i:07d}" for i in range(1, n + 1)]
    days = np.random.default_rng(seed).integers(0, 365, n)
    frame["opened_at"] = (pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d %H:%M:%S")
    frame.to_csv(path, index=False)
    return frame


def fill_cache(model: str, tickets: Path, cache: Path) -> float:
    """The index cache the server reads, each distinct text encoded once; seconds taken."""
    texts = list(read_ticket_file(tickets).frame["text"])
    start = time.perf_counter()

    def encode(batch: list[str]) -> np.ndarray:
        vectors = encode_texts(load_model(model), sorted(set(batch)), show_progress=True)
        return np.stack([vectors[t] for t in batch])

    IndexCache(cache).load_or_build(resolve_model(model), texts, encode, "exact")
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--unique", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--work", default="/tmp/tickettune-filters")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"tickets-{args.tickets}.csv"
    frame = write_tickets(path, args.tickets, args.unique, seed=0)
    built = fill_cache(args.model, path, work / "cache")
    ci = frame["cmdb_ci"].value_counts()
    group = frame["assignment_group"].value_counts().index[0]
    filters = {
        "none": None,
        f"cmdb_ci (one CI, {ci.iloc[0] / len(frame):.0%} of tickets)": {"cmdb_ci": ci.index[0]},
        "assignment_group + state": {"assignment_group": group, "state": "Closed"},
        "opened in a 30-day window": {"opened_after": "2024-06-01", "opened_before": "2024-07-01"},
        "state (most tickets pass)": {"state": frame["state"].value_counts().index[0]},
        "cmdb_ci, 3 values": {"cmdb_ci": list(ci.index[:3])},
    }
    shares = {name: 1.0 if spec is None else None for name, spec in filters.items()}
    port = free_port()
    log = open(work / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "tickettune", "serve", "--model", args.model, "--tickets", str(path),
                               "--cache-dir", str(work / "cache"), "--store", str(work / "store"), "--port", str(port),
                               "--threads", "1", "--index", "exact"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(900):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        queries = [f"{r.short_description}\n{r.description}" for r in generate_sample(200, 1).itertuples()]
        times: dict[str, list[float]] = {name: [] for name in filters}
        with httpx.Client(base_url=url, timeout=60) as client:
            for spec in filters.values():  # warm-up, and how many tickets each filter passes
                body = {"text": queries[0], "k": 100, **({"filters": spec} if spec else {})}
                client.post("/similar", json=body).raise_for_status()
            for turn in range(args.turns):
                for name, spec in filters.items():
                    body = {"text": queries[turn % len(queries)], "k": 10, **({"filters": spec} if spec else {})}
                    started = time.perf_counter()
                    answer = client.post("/similar", json=body)
                    times[name].append(time.perf_counter() - started)
                    answer.raise_for_status()
                    assert len(answer.json()["results"]) == 10
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    from tickettune.serving.filters import TicketFilter

    tickets = read_ticket_file(path).frame
    for name, spec in filters.items():
        if spec is not None:
            shares[name] = len(TicketFilter.parse(spec, tickets.columns).rows(tickets)) / len(tickets)
    base = np.percentile(times["none"], 95)
    lines = ["| filter | tickets passing | p50 ms | p95 ms | p95 / unfiltered p95 |", "|---|---:|---:|---:|---:|"]
    for name, values in times.items():
        p50, p95 = np.percentile(values, 50) * 1000, np.percentile(values, 95) * 1000
        lines.append(f"| {name} | {shares[name]:.1%} | {p50:.1f} | {p95:.1f} | {p95 / base / 1000:.2f} |")
    body = "\n".join(lines) + (
        f"\n\n{args.tickets} tickets ({args.unique} distinct texts, cache filled in {built:.0f} s), exact index, "
        f"`--threads 1`, model `{args.model}`; one client, {args.turns} turns of one request per filter (k=10, "
        "reasons on), interleaved; each answer had 10 results.\n")
    print(body)
    if not args.no_record:
        append_under("Filtered search", body)


if __name__ == "__main__":
    main()
