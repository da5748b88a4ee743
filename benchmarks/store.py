"""What the service's store costs a request at 100,000 tickets: adding one ticket (`LiveTickets.upsert`, the work
behind POST /tickets), and the check for other processes' changes that precedes every batch (`refresh`), on
SQLite (a file, WAL, synchronous=NORMAL) and PostgreSQL (127.0.0.1, a fresh schema; skipped when none answers).

The index is 100,000 random unit vectors (384 dimensions, as all-MiniLM-L6-v2's) under a hash encoder, so
the figures are the store's and the index's, not the model's; the model's encoding of one ticket text is
timed apart (p50 over `--encodes` texts, one thread; PyTorch, and with `--export` that folder's int8 file, as the
service's encoder runs them) and added for the end-to-end estimate.

    python benchmarks/store.py                     # appends to RESULTS.md
    python benchmarks/store.py --tickets 5000 --adds 50 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from pull import HashEncoder  # noqa: E402
from tickettune.serving.live_tickets import LiveTickets  # noqa: E402

POSTGRES = os.environ.get("TICKETTUNE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def postgres_url():
    """A store URL on a new schema of the benchmark server, and a function that drops it; None when none answers."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(POSTGRES, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as conn:
            schema = f"tickettune_bench_{uuid.uuid4().hex[:10]}"
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sqlalchemy.exc.OperationalError:
        return None, None

    def drop():
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()

    return f"{POSTGRES}?options={quote(f'-csearch_path={schema}')}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--adds", type=int, default=300, help="tickets added one at a time, per store")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--encodes", type=int, default=50, help="single-text encodes timed with the real model")
    parser.add_argument("--export", type=Path, default=None,
                        help="a `tickettune export --onnx --quantize int8` folder of --model: its int8 file timed too")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tickettune-store-bench-"))
    model = work / "model"
    model.mkdir()
    (model / "weights.bin").write_text("hash encoder")
    tickets = pd.DataFrame({"number": [f"INC{i:07d}" for i in range(args.tickets)],
                            "text": [f"synthetic incident {i} about topic {i % 997}" for i in range(args.tickets)],
                            "assignment_group": [f"Group {i % 20}" for i in range(args.tickets)]})
    stores = [("SQLite", str(work / "store"), None)]
    url, drop = postgres_url()
    if url:
        stores.append(("PostgreSQL", url, drop))
    else:
        print(f"no PostgreSQL at {POSTGRES}: SQLite only", flush=True)
    rows = []
    for name, location, cleanup in stores:
        encoder = HashEncoder()
        live, _ = LiveTickets.open(tickets, model, encoder, location, cache_dir=work / "cache")
        adds, updates, refreshes = [], [], []
        for i in range(args.adds):
            record = {"number": f"INC9{i:06d}", "short_description": f"new ticket {i} printer jams",
                      "assignment_group": "Desk"}
            start = time.perf_counter()
            live.upsert([record])
            adds.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            live.refresh()
            refreshes.append((time.perf_counter() - start) * 1000)
        for i in range(0, args.adds, 3):
            start = time.perf_counter()
            live.upsert([{"number": f"INC{i:07d}", "short_description": f"rewritten {i}"}])
            updates.append((time.perf_counter() - start) * 1000)
        assert len(live) == args.tickets + args.adds
        for label, values in (("add one ticket (upsert)", adds), ("replace one file ticket (upsert)", updates),
                              ("refresh, nothing new (before every batch)", refreshes)):
            p50, p95 = percentiles(values)
            rows.append(f"| {label} | {name} | {len(values)} | {p50:.2f} | {p95:.2f} |")
            print(rows[-1], flush=True)
        live.store.close()
        if cleanup:
            cleanup()

    import torch

    from tickettune.serving.encoders import Encoder

    torch.set_num_threads(1)
    # The encoders a server writes with: the model's PyTorch weights, and (--export) an export's int8 file, each on
    # one thread, through the service's own Encoder (one text per ONNX pass).
    encoders = {"PyTorch": Encoder.of(args.model, backend="torch", threads=1)}
    if args.export:
        encoders[f"ONNX int8 ({args.export.name})"] = Encoder.of(str(args.export), threads=1)
    # Ticket texts as an agent writes them: a title, or a title and a description (as benchmarks/serve.py posts).
    titles = [f"new ticket {i} printer on floor {i % 9} jams" for i in range(args.encodes)]
    incidents = [f"{t}\nSince this morning the printer on floor {i % 9} jams on every second page; the user tried "
                 f"another tray and restarted it, the error stays E{i % 50:02d}." for i, t in enumerate(titles)]
    encode_lines = []
    for name, encoder in encoders.items():
        encoder.encode(titles[:5])
        for kind, texts in (("title", titles), ("title + description", incidents)):
            times = []
            for text in texts:
                start = time.perf_counter()
                encoder([text])
                times.append((time.perf_counter() - start) * 1000)
            encode_p50, encode_p95 = percentiles(times)
            encode_lines.append(f"| {name} | {kind} | {len(texts)} | {encode_p50:.2f} | {encode_p95:.2f} |")
            print(encode_lines[-1], flush=True)
    body = (f"{args.tickets:,} tickets in the served index (exact, 384-dimensional random unit vectors, hash "
            "encoder), one ticket per call, timed in-process (no HTTP). SQLite: a file in /tmp, WAL, "
            "synchronous=NORMAL (store.py says why); PostgreSQL 15 on 127.0.0.1 when reachable.\n\n"
            "| operation | store | calls | p50 (ms) | p95 (ms) |\n|---|---|---:|---:|---:|\n" + "\n".join(rows) +
            f"\n\nEncoding one ticket text ({args.model}, one thread): POST /tickets costs about this plus the upsert "
            "row above, plus HTTP.\n\n| encoder | text | calls | p50 (ms) | p95 (ms) |\n|---|---|---:|---:|---:|\n"
            + "\n".join(encode_lines) + "\n")
    print(body)
    if not args.no_record:
        from _results import append_under

        append_under("Store", body)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
