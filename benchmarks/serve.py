"""`tickettune serve` under load: concurrent clients asking /similar by text of a server holding 100,000 tickets.

The tickets are the built-in synthetic sample (`generate_sample`): `--unique` distinct incidents, repeated
with new numbers up to `--tickets` rows. Only the distinct texts are encoded to build the server's index
cache before it starts (each row's vector is still the model's encoding of its own text), which keeps the
build to minutes on 2 cores; the server's work per request (encode the query, scan every row) is that of
100,000 tickets. The queries are other incidents of the sample (another seed), as an agent would paste them.

Every configuration (index exact or ivf, batching on or off, torch threads) is a `tickettune serve` process on 127.0.0.1,
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
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tickettune.similarity import encode_texts
from tickettune.models import load_model, resolve_model
from tickettune.sample import generate_sample
from tickettune.search import IndexCache, read_ticket_file

COLUMNS = ["number", "short_description", "description", "assignment_group"]


def write_tickets(path: Path, n: int, unique: int, seed: int) -> None:
    base = generate_sample(unique, seed)[COLUMNS]
    frame = pd.concat([base] * -(-n // unique), ignore_index=True).head(n)
    frame["number"] = [f"INC{i:07d}" for i in range(1, n + 1)]
    frame.to_csv(path, index=False)


def build_index(model: str, tickets: Path, cache: Path, backends: set[str]) -> tuple[float, bool]:
    """Fill the index cache the servers will read, encoding each distinct text once; seconds taken, and whether
    it was there already. Other backends' entries reuse the exact entry's vectors (same model, same texts)."""
    texts = list(read_ticket_file(tickets)["text"])
    folder = resolve_model(model)
    start = time.perf_counter()
    loaded = []

    def encode(batch: list[str]) -> np.ndarray:
        if not loaded:
            loaded.append(load_model(model))
        vectors = encode_texts(loaded[0], batch, show_progress=True)
        return np.stack([vectors[t] for t in batch])

    exact, cached = IndexCache(cache).load_or_build(folder, texts, encode, "exact")
    for backend in backends - {"exact"}:
        IndexCache(cache).load_or_build(folder, texts, lambda _: np.asarray(exact.vectors), backend)
    return time.perf_counter() - start, cached


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
    lines = ["| request | index | batching | torch threads | clients | requests | failed | p50 (ms) | p95 (ms) | requests/s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['request']} | {r['index']} | {'on' if r['batching'] else 'off'} | {r['threads']} "
                     f"| {r['clients']} | {r['requests']} | {r['failed']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['rps']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--unique", type=int, default=6_000, help="distinct incidents among the tickets")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads of the batching server")
    parser.add_argument("--indexes", nargs="+", default=["exact", "ivf"], choices=["exact", "ivf"],
                        help="index backends of the batching server (the others use the first)")
    parser.add_argument("--posts", type=int, default=30, help="POST /tickets requests (one new ticket each)")
    parser.add_argument("--seconds", type=float, default=16.0, help="per row")
    parser.add_argument("--max-requests", type=int, default=3000, help="per row")
    parser.add_argument("--turns", type=int, default=4, help="each row's time is split into this many turns")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tickettune-serve-bench"),
                        help="tickets, index cache, store and server logs (the index is reused by later runs)")
    parser.add_argument("--store", default=None, help="every server's --store (e.g. postgresql://USER@HOST/DB; "
                                                      "default: a new SQLite store per server)")
    parser.add_argument("--only", nargs="+", default=["text", "title", "number", "posts"],
                        choices=["text", "title", "number", "posts"], help="which rows to run")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tickets = args.work / f"tickets-{args.tickets}-{args.unique}.csv"
    if not tickets.is_file():
        write_tickets(tickets, args.tickets, args.unique, seed=0)
    build_s, reused = build_index(args.model, tickets, args.work / "cache", set(args.indexes))
    queries = generate_sample(2000, seed=1)
    texts = [f"{s}\n{d}".strip() for s, d in zip(queries["short_description"], queries["description"])]
    by_text = [{"text": t, "k": 10} for t in texts]
    by_title = [{"text": t, "k": 10} for t in queries["short_description"]]
    numbers = [{"number": f"INC{i:07d}", "k": 10} for i in range(1, args.tickets + 1, 37)]
    print(f"index of {args.tickets} tickets ready in {build_s:.0f} s", flush=True)
    # Numbers of their own per server: with a shared --store, one server's posts are not the other's updates.
    posts = {j: [{"tickets": [{"number": f"INC9{j}{i:05d}", "short_description": t}]} for i, t in enumerate(texts)]
             for j in range(2)}

    # (index, batching, torch threads)
    first = args.indexes[0], True, args.threads[0]
    configs = ([first] + [(args.indexes[0], True, t) for t in args.threads[1:]] + [(args.indexes[0], False, args.threads[0])]
               + [(index, True, args.threads[0]) for index in args.indexes[1:]])
    servers = {}
    rows = []

    def row(request: str, config: tuple, clients: int, runs: list[dict]) -> None:
        rows.append({"request": request, "index": config[0], "batching": config[1], "threads": config[2],
                     "clients": clients, **summary(runs)})
        print(table(rows[-1:]).splitlines()[-1], flush=True)

    try:
        # All servers at once, driven in turns: load from other work on the machine drifts, and turns
        # spread it over the configurations alike. An idle server takes no CPU.
        for config in configs:
            index, batching, threads = config
            store = args.store or args.work / f"store-{time.time_ns()}"  # empty: no ticket added by an earlier run
            servers[config] = Server(
                ["--model", args.model, "--tickets", str(tickets), "--cache-dir", str(args.work / "cache"), "--store",
                 str(store), "--threads", str(threads), "--index", index] + ([] if batching else ["--no-batching"]),
                args.work / f"server-{index}-{'batch' if batching else 'single'}-{threads}.log")
        for request, bodies in [("/similar by text", by_text), ("/similar by title", by_title)]:
            if request.split()[-1] not in args.only:
                continue
            for clients in args.clients:
                runs = {config: [] for config in configs}
                for _ in range(args.turns):
                    for config in configs:
                        runs[config].append(asyncio.run(drive(servers[config].url, "/similar", bodies, clients,
                                                              args.seconds / args.turns, args.max_requests // args.turns)))
                for config, done in runs.items():
                    row(request, config, clients, done)
        ends = list(dict.fromkeys([configs[0], configs[-1]]))  # exact and IVF, batching on
        for config in ends if "number" in args.only else []:
            row("/similar by number", config, 8,
                [asyncio.run(drive(servers[config].url, "/similar", numbers, 8, args.seconds, args.max_requests))])
        for j, config in enumerate(ends if "posts" in args.only else []):
            row("POST /tickets, 1 new ticket", config, 1,
                [asyncio.run(drive(servers[config].url, "/tickets", posts[j], 1, args.seconds, args.posts))])
    finally:
        for server in servers.values():
            server.stop()
    body = (f"{args.model}, {args.tickets:,} tickets ({args.unique:,} distinct synthetic incidents repeated), index "
            f"exact (every ticket scanned) or ivf (FAISS IVF-Flat as `tickettune search` builds it), k=10, queries: 2,000 other synthetic incidents, "
            f"by text = short description + description (as a new incident holds them), by title = short description "
            f"only. Closed-loop httpx clients on the same machine, {args.seconds:g} s or {args.max_requests} requests "
            f"per row in {args.turns} turns taken in rotation with the other configurations' rows (every server runs "
            f"throughout, idle when not driven), each after a warm-up; one server process each (uvicorn, uvloop). The "
            + (f"exact index came from the cache of an earlier run ({build_s:.0f} s here for the other indexes)" if reused
               else f"index cache was filled in {build_s:.0f} s")
            + ". POST /tickets adds one new ticket per request; store: "
            + (re.sub(r"//[^@/]*@", "//", str(args.store)) if args.store else "a new SQLite store per server")
            + ".\n\n" + table(rows))
    print(body)
    if not args.no_record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _results import append_under

        append_under("Serve", body)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
