"""`tickettune serve` under load, PyTorch against ONNX and ONNX int8 encoders: concurrent clients asking /similar
of a server holding 100,000 tickets, and each encoder's precision@10 on the same held-out queries beside its latency.

The tickets are the built-in synthetic sample (`generate_sample`): `--unique` distinct incidents, repeated
with new numbers up to `--tickets` rows. The index is encoded once (each distinct text once) by
`--index-encoder` into the cache every server reads, so all encoders search the same index; each server checks
at start-up that its encoder agrees with the index's model on the probe texts (cosine >= 0.99; the figure is
in the quality table). The ONNX files are `tickettune export --onnx --quantize int8` of `--model`, written
once under `--work`. The queries are other incidents of the sample (another seed), as an agent would paste them.

Every configuration (encoder x index x threads x batching) is a `tickettune serve` process on 127.0.0.1, all
started at once and driven in turns, so that load from other work on the machine falls on them alike. A
row is `--clients` closed-loop clients (each sends its next request when its answer arrives) for `--seconds`
or `--max-requests`, whichever comes first; latency is measured at the client, which runs on the same cores
as the servers. Quality: each server answers the same `--quality-queries` held-out incidents that belong to a
problem (one client, k=10); precision@10 is the share of the hits that belong to the query's problem.

    python benchmarks/serve.py                                  # appends to RESULTS.md
    python benchmarks/serve.py --tickets 5000 --unique 300 --seconds 4 --clients 8 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tickettune.data.sample import generate_sample
from tickettune.serving.encoders import Encoder
from tickettune.serving.index import IndexCache
from tickettune.serving.search import read_ticket_file
from tickettune.training.export import INT8_RECIPE, export_model

COLUMNS = ["number", "short_description", "description", "assignment_group"]
ENCODERS = ("torch", "onnx", "int8")


def write_tickets(path: Path, n: int, unique: int, seed: int) -> None:
    base = generate_sample(unique, seed)[COLUMNS]
    frame = pd.concat([base] * -(-n // unique), ignore_index=True).head(n)
    frame["number"] = [f"INC{i:07d}" for i in range(1, n + 1)]
    frame.to_csv(path, index=False)


def problems_of_numbers(n: int, unique: int, seed: int) -> dict[str, str]:
    """Each ticket number's problem (empty for one-off requests), as `write_tickets` numbered the rows."""
    problems = generate_sample(unique, seed)["problem_id"].tolist()
    return {f"INC{i:07d}": problems[(i - 1) % unique] for i in range(1, n + 1)}


def current_int8(export: Path) -> bool:
    """Whether the export's int8 file was made the way `tickettune export --quantize int8` makes it now."""
    try:
        made = json.loads((export / "export.json").read_text()).get("quantization") or {}
    except (OSError, ValueError):
        return False
    return (made.get("per_channel"), tuple(made.get("op_types") or ()), made.get("matmul_const_b_only")) == (
        INT8_RECIPE["per_channel"], tuple(INT8_RECIPE["op_types"]), INT8_RECIPE["const_b_only"])


def encoder_args(encoder: str, model: str, export: Path) -> list[str]:
    """The `serve` options that run `encoder`: the model's PyTorch weights, or one of the export's ONNX files."""
    return {"torch": ["--model", model], "onnx": ["--model", str(export), "--onnx-file", "onnx/model.onnx"],
            "int8": ["--model", str(export)]}[encoder]  # an export's int8 file is what auto runs


class Reuse:
    """The exact index's vectors (and probe) handed to another backend's build: same model, same texts."""

    def __init__(self, index):
        self.vectors, self.probe = index.vectors, index.probe

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.vectors)


def build_index(encoder: Encoder, tickets: Path, cache: Path, backends: set[str]) -> tuple[float, bool]:
    """Fill the index cache the servers will read; seconds taken, and whether the exact entry was there already."""
    texts = list(read_ticket_file(tickets).frame["text"])
    start = time.perf_counter()
    exact, cached = IndexCache(cache).load_or_build(encoder.folder, texts, encoder, "exact")
    for backend in backends - {"exact"}:
        IndexCache(cache).load_or_build(encoder.folder, texts, Reuse(exact), backend)
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
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "tickettune", "serve", *args, "--port", str(self.port)],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"the server did not start; see {log}")

    def agreement(self) -> str:
        """The lowest probe cosine to the index's model that the server logged at start-up."""
        found = re.search(r"lowest probe cosine to the index's model ([0-9.]+)", self.log.read_text())
        return found.group(1) if found else "built here"

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


def precision_at_10(url: str, queries: list[tuple[str, str]], problem_of: dict[str, str]) -> float:
    """Mean share of each query's 10 hits that belong to its problem, from the server's own answers."""
    import httpx

    shares = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for text, problem in queries:
            hits = client.post("/similar", json={"text": text, "k": 10}).raise_for_status().json()["results"]
            shares.append(sum(problem_of[hit["number"]] == problem for hit in hits) / 10)
    return float(np.mean(shares))


def summary(runs: list[dict]) -> dict:
    latencies = [x for run in runs for x in run["latencies"]]
    return {"requests": len(latencies), "failed": sum(run["failed"] for run in runs),
            "rps": len(latencies) / sum(run["seconds"] for run in runs),
            "p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))}


def table(rows: list[dict]) -> str:
    lines = ["| request | encoder | index | batching | threads | clients | requests | failed | p50 (ms) | p95 (ms) "
             "| requests/s |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['request']} | {r['encoder']} | {r['index']} | {'on' if r['batching'] else 'off'} "
                     f"| {r['threads']} | {r['clients']} | {r['requests']} | {r['failed']} | {r['p50']:.1f} "
                     f"| {r['p95']:.1f} | {r['rps']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--unique", type=int, default=6_000, help="distinct incidents among the tickets")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--index-encoder", default="onnx", choices=ENCODERS,
                        help="encoder that builds the shared index (onnx: PyTorch's embeddings, built faster)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads, and ONNX Runtime intra-op threads, per server")
    parser.add_argument("--indexes", nargs="+", default=["exact", "ivf"], choices=["exact", "ivf"])
    parser.add_argument("--batching", nargs="+", default=["on"], choices=["on", "off"])
    parser.add_argument("--posts", type=int, default=30, help="POST /tickets requests (one new ticket each)")
    parser.add_argument("--quality-queries", type=int, default=300, help="held-out queries for precision@10")
    parser.add_argument("--seconds", type=float, default=16.0, help="per row")
    parser.add_argument("--max-requests", type=int, default=3000, help="per row")
    parser.add_argument("--turns", type=int, default=4, help="each row's time is split into this many turns")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tickettune-serve-bench"),
                        help="tickets, ONNX export, index cache, store and server logs (reused by later runs)")
    parser.add_argument("--store", default=None, help="every server's --store (e.g. postgresql://USER@HOST/DB; "
                                                      "default: a new SQLite store per server)")
    parser.add_argument("--only", nargs="+", default=["text", "title", "number", "posts"],
                        choices=["text", "title", "number", "posts"], help="which rows to run")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    export = args.work / f"export-{Path(args.model).name}"
    if export.is_dir() and not current_int8(export):
        print(f"{export} holds an int8 file of another recipe than export.INT8_RECIPE: exporting again", flush=True)
        shutil.rmtree(export)
    if not export.is_dir():
        print(f"exporting {args.model} to {export} (ONNX, int8)", flush=True)
        export_model(args.model, export, merge=False, onnx=True, quantize="int8")
    tickets = args.work / f"tickets-{args.tickets}-{args.unique}.csv"
    if not tickets.is_file():
        write_tickets(tickets, args.tickets, args.unique, seed=0)
    index_encoder = {"torch": lambda: Encoder.of(args.model), "int8": lambda: Encoder.of(str(export)),
                     "onnx": lambda: Encoder.of(str(export), onnx_file="onnx/model.onnx")}[args.index_encoder]()
    build_s, reused = build_index(index_encoder, tickets, args.work / "cache", set(args.indexes))
    queries = generate_sample(2000, seed=1)
    texts = [f"{s}\n{d}".strip() for s, d in zip(queries["short_description"], queries["description"])]
    bodies = {"text": [{"text": t, "k": 10} for t in texts],
              "title": [{"text": t, "k": 10} for t in queries["short_description"]]}
    held_out = [(t, p) for t, p in zip(texts, queries["problem_id"]) if p][:args.quality_queries]
    problem_of = problems_of_numbers(args.tickets, args.unique, seed=0)
    numbers = [{"number": f"INC{i:07d}", "k": 10} for i in range(1, args.tickets + 1, 37)]
    print(f"index of {args.tickets} tickets ready in {build_s:.0f} s", flush=True)
    # Numbers of their own per server: with a shared --store, one server's posts are not the other's updates.
    posts = {j: [{"tickets": [{"number": f"INC9{j}{i:05d}", "short_description": t}]} for i, t in enumerate(texts)]
             for j in range(2)}

    # (encoder, index, batching, threads); every combination, the encoders side by side.
    configs = [(encoder, index, batching == "on", threads) for index in args.indexes for threads in args.threads
               for batching in args.batching for encoder in args.encoders]
    servers = {}
    rows, quality = [], []

    def row(request: str, config: tuple, clients: int, runs: list[dict]) -> None:
        rows.append({"request": request, "encoder": config[0], "index": config[1], "batching": config[2],
                     "threads": config[3], "clients": clients, **summary(runs)})
        print(table(rows[-1:]).splitlines()[-1], flush=True)

    try:
        # All servers at once, driven in turns: load from other work on the machine drifts, and turns
        # spread it over the configurations alike. An idle server takes no CPU.
        for config in configs:
            encoder, index, batching, threads = config
            store = args.store or args.work / f"store-{time.time_ns()}"  # empty: no ticket added by an earlier run
            name = f"{encoder}-{index}-{'batch' if batching else 'single'}-{threads}"
            servers[config] = Server(
                encoder_args(encoder, args.model, export) + [
                    "--tickets", str(tickets), "--cache-dir", str(args.work / "cache"), "--store", str(store),
                    "--threads", str(threads), "--index", index] + ([] if batching else ["--no-batching"]),
                args.work / f"server-{name}.log")
        for config in configs:
            quality.append((config, precision_at_10(servers[config].url, held_out, problem_of),
                            servers[config].agreement()))
            print(f"{config}: precision@10 {quality[-1][1]:.4f}", flush=True)
        for request in [r for r in ("text", "title") if r in args.only]:
            for clients in args.clients:
                runs = {config: [] for config in configs}
                for _ in range(args.turns):
                    for config in configs:
                        runs[config].append(asyncio.run(drive(servers[config].url, "/similar", bodies[request], clients,
                                                              args.seconds / args.turns, args.max_requests // args.turns)))
                for config, done in runs.items():
                    row(f"/similar by {request}", config, clients, done)
        ends = list(dict.fromkeys([configs[0], configs[-1]]))
        for config in ends if "number" in args.only else []:
            row("/similar by number", config, 8,
                [asyncio.run(drive(servers[config].url, "/similar", numbers, 8, args.seconds, args.max_requests))])
        for j, config in enumerate(ends if "posts" in args.only else []):
            row("POST /tickets, 1 new ticket", config, 1,
                [asyncio.run(drive(servers[config].url, "/tickets", posts[j], 1, args.seconds, args.posts))])
    finally:
        for server in servers.values():
            server.stop()
    reference = {(c[1], c[2], c[3]): p for c, p, _ in quality if c[0] == "torch"}
    quality_lines = ["| encoder | index | batching | threads | precision@10 | change vs torch "
                     "| probe cosine to the index's model |",
                     "|---|---|---|---:|---:|---:|---:|"]
    for (encoder, index, batching, threads), precision, agreement in quality:
        base = reference.get((index, batching, threads))
        change = "" if base is None else f"{precision - base:+.4f}"
        quality_lines.append(f"| {encoder} | {index} | {'on' if batching else 'off'} | {threads} | {precision:.4f} "
                             f"| {change} | {agreement} |")
    encoders = {"torch": "torch (PyTorch)", "onnx": "onnx (fp32 ONNX)", "int8": "int8 (dynamically quantized ONNX)"}
    indexes = {"exact": "exact (every ticket scanned)", "ivf": "ivf (FAISS IVF-Flat as `tickettune search` builds it)"}
    body = (f"{args.model}, {args.tickets:,} tickets ({args.unique:,} distinct synthetic incidents repeated), encoders "
            f"{', '.join(encoders[e] for e in args.encoders)}, the ONNX files from `tickettune export --onnx "
            f"--quantize int8`; every server searches the same index, built by the {args.index_encoder} encoder; "
            f"index {' or '.join(indexes[i] for i in args.indexes)}; threads = torch threads and ONNX Runtime intra-op "
            f"threads per server. k=10, queries: "
            f"2,000 other synthetic incidents, by text = short description + description (as a new incident holds "
            f"them), by title = short description only. Closed-loop httpx clients on the same machine, "
            f"{args.seconds:g} s or {args.max_requests} requests per row in {args.turns} turns taken in rotation with "
            f"the other configurations' rows (every server runs throughout, idle when not driven), each after a "
            f"warm-up; one server process each (uvicorn, uvloop). "
            + (f"The exact index came from the cache of an earlier run ({build_s:.0f} s here for the other indexes)"
               if reused else f"The index cache was filled in {build_s:.0f} s")
            + ". POST /tickets adds one new ticket per request; store: "
            + (re.sub(r"//[^@/]*@", "//", str(args.store)) if args.store else "a new SQLite store per server")
            + f".\n\nRetrieval quality on {len(held_out)} held-out "
            f"incidents that belong to a problem (sent by text, one client, k=10): precision@10 = the share of the "
            f"hits that belong to the query's problem.\n\n" + "\n".join(quality_lines) + "\n\n" + table(rows))
    print(body)
    if not args.no_record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _results import append_under

        append_under("Serve", body, title="Serve: PyTorch, ONNX and ONNX int8 encoders")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
