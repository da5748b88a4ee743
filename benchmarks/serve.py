"""`tickettune serve` under load: concurrent clients asking /similar by text of a server holding 100,000 tickets.

The tickets are the built-in synthetic sample (`generate_sample`): `--unique` distinct incidents, repeated
with new numbers up to `--tickets` rows. Only the distinct texts are encoded to build the server's index
cache before it starts (each row's vector is still the model's encoding of its own text), which keeps the
build to minutes on 2 cores; the server's work per request (encode the query, scan every row) is that of
100,000 tickets. The queries are other incidents of the sample (another seed), as an agent would paste them.

Every configuration (batching on or off, torch threads) is a `tickettune serve` process on 127.0.0.1,
all started at once and driven in turns, so that load from other work on the machine falls on them
alike. A row is `--clients` closed-loop clients (each sends its next request when its answer arrives)
for `--seconds` or `--max-requests`, whichever comes first; latency is measured at the client, which
runs on the same cores as the servers.

    python benchmarks/serve.py                                  # appends to RESULTS.md
    python benchmarks/serve.py --tickets 5000 --unique 300 --seconds 4 --clients 8 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tickettune.evaluate import encode_texts
from tickettune.models import load_model, resolve_model
from tickettune.sample import generate_sample
from tickettune.search import IndexCache, read_ticket_file

COLUMNS = ["number", "short_description", "description", "assignment_group"]


def write_tickets(path: Path, n: int, unique: int, seed: int) -> None:
    base = generate_sample(unique, seed)[COLUMNS]
    frame = pd.concat([base] * -(-n // unique), ignore_index=True).head(n)
    frame["number"] = [f"INC{i:07d}" for i in range(1, n + 1)]
    frame.to_csv(path, index=False)


def build_index(model: str, tickets: Path, cache: Path) -> float:
    """Fill the index cache the server will read, encoding each distinct text once; seconds taken."""
    texts = list(read_ticket_file(tickets)["text"])
    start = time.perf_counter()
    loaded = []

    def encode(batch: list[str]) -> np.ndarray:
        if not loaded:
            loaded.append(load_model(model))
        vectors = encode_texts(loaded[0], batch, show_progress=True)
        return np.stack([vectors[t] for t in batch])

    IndexCache(cache).load_or_build(resolve_model(model), texts, encode)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, args: list[str], log: Path):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "tickettune", "serve", *args, "--port", str(self.port)],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"the server did not start; see {log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)


async def drive(url: str, path: str, bodies: list[dict], clients: int, seconds: float, max_requests: int) -> dict:
    """Closed-loop clients until the time or the request budget is spent: latencies (ms), failures, seconds taken."""
    import httpx

    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        for body in bodies[:clients]:  # warm-up: connections open, first-call costs paid
            await client.post(path, json=body)
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one_client(offset: int) -> None:
            nonlocal failures
            while loop.time() - start < seconds and len(latencies) < max_requests:
                body = bodies[(offset + len(latencies)) % len(bodies)]
                began = time.perf_counter()
                try:
                    ok = (await client.post(path, json=body)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - began) * 1000)
                failures += not ok

        await asyncio.gather(*(one_client(i * 7919) for i in range(clients)))
        return {"latencies": latencies, "failed": failures, "seconds": loop.time() - start}


def summary(runs: list[dict]) -> dict:
    latencies = [x for run in runs for x in run["latencies"]]
    return {"requests": len(latencies), "failed": sum(run["failed"] for run in runs),
            "rps": len(latencies) / sum(run["seconds"] for run in runs),
            "p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))}


def table(rows: list[dict]) -> str:
    lines = ["| request | batching | torch threads | clients | requests | failed | p50 (ms) | p95 (ms) | requests/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['request']} | {'on' if r['batching'] else 'off'} | {r['threads']} | {r['clients']} "
                     f"| {r['requests']} | {r['failed']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['rps']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--unique", type=int, default=6_000, help="distinct incidents among the tickets")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads of the batching server")
    parser.add_argument("--seconds", type=float, default=16.0, help="per row")
    parser.add_argument("--max-requests", type=int, default=3000, help="per row")
    parser.add_argument("--turns", type=int, default=4, help="each row's time is split into this many turns")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tickettune-serve-bench"),
                        help="tickets, index cache, store and server logs (the index is reused by later runs)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tickets = args.work / f"tickets-{args.tickets}-{args.unique}.csv"
    if not tickets.is_file():
        write_tickets(tickets, args.tickets, args.unique, seed=0)
    build_s = build_index(args.model, tickets, args.work / "cache")
    queries = generate_sample(2000, seed=1)
    texts = [f"{s}\n{d}".strip() for s, d in zip(queries["short_description"], queries["description"])]
    by_text = [{"text": t, "k": 10} for t in texts]
    by_title = [{"text": t, "k": 10} for t in queries["short_description"]]
    numbers = [{"number": f"INC{i:07d}", "k": 10} for i in range(1, args.tickets + 1, 37)]
    print(f"index of {args.tickets} tickets ready in {build_s:.0f} s", flush=True)

    configs = [(True, threads) for threads in args.threads] + [(False, args.threads[0])]
    servers = {}
    try:
        # All servers at once, driven in turns: load from other work on the machine drifts, and turns
        # spread it over the configurations alike. An idle server takes no CPU.
        for batching, threads in configs:
            store = args.work / f"store-{time.time_ns()}"  # empty: no ticket added by an earlier run
            servers[batching, threads] = Server(
                ["--model", args.model, "--tickets", str(tickets), "--cache-dir", str(args.work / "cache"), "--store",
                 str(store), "--threads", str(threads)] + ([] if batching else ["--no-batching"]),
                args.work / f"server-{'batch' if batching else 'single'}-{threads}.log")
        rows = []
        loads = [("/similar by text", by_text), ("/similar by title", by_title)]
        for request, bodies in loads:
            for clients in args.clients:
                runs = {config: [] for config in configs}
                for _ in range(args.turns):
                    for config in configs:
                        runs[config].append(asyncio.run(drive(servers[config].url, "/similar", bodies, clients,
                                                              args.seconds / args.turns, args.max_requests // args.turns)))
                for (batching, threads), done in runs.items():
                    rows.append({"request": request, "batching": batching, "threads": threads, "clients": clients,
                                 **summary(done)})
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        first = configs[0]
        done = [asyncio.run(drive(servers[first].url, "/similar", numbers, 8, args.seconds, args.max_requests))]
        rows.append({"request": "/similar by number", "batching": first[0], "threads": first[1], "clients": 8,
                     **summary(done)})
    finally:
        for server in servers.values():
            server.stop()
    body = (f"{args.model}, {args.tickets:,} tickets ({args.unique:,} distinct synthetic incidents repeated; exact "
            f"numpy scan), k=10, queries: 2,000 other synthetic incidents, "
            f"by text = short description + description (as a new incident holds them), by title = short description "
            f"only. Closed-loop httpx clients on the same machine, {args.seconds:g} s or {args.max_requests} requests "
            f"per row in {args.turns} turns taken in rotation with the other configurations' rows (every server runs "
            f"throughout, idle when not driven), each after a warm-up; one server process each (uvicorn, uvloop). The "
            f"index cache was filled in {build_s:.0f} s "
            f"(0 when reused).\n\n" + table(rows))
    print(body)
    if not args.no_record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _results import append_under

        append_under("Serve", body)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
