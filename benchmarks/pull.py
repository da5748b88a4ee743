"""`tickettune pull` and `serve --sync-from` at 100,000 incidents, against the Table API stand-in
(tickettune.sources.servicenow_standin: a stand-in that follows the Table API's documented paging, not ServiceNow).

1. A full pull while 1 % of the records change between pages (spread over the pages, each change stamped
   now, as a user's edit is): is every record in the file exactly once, at its latest version? The same
   read by offset paging (`sysparm_offset`, as pysnc pages) is counted beside it.
2. `--since-last` after `--changes` records changed their text: how many records came over the wire
   (the changes, plus the overlap re-read before the mark) and how many sys_ids the deletion listing read.
3. A sync of the same changes into a service's tickets (`LiveTickets` with the SQLite store): how many
   texts were encoded. The encoder here is a hash (a stand-in for the model, so the figure is the
   count, not the time); `--model-texts` texts are encoded by the real model to give its rate.

    python benchmarks/pull.py                      # appends to RESULTS.md
    python benchmarks/pull.py --records 5000 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from tickettune.serving.live_tickets import LiveTickets
from tickettune.serving.search import read_ticket_file
from tickettune.serving.sync import Syncer
from tickettune.sources.pull import OVERLAP_SECONDS, Source, pull
from tickettune.sources.servicenow import Credentials, TableClient
from tickettune.sources.servicenow_standin import Instance, StandinServer, make_incidents

USER, PASSWORD = "bench", "bench-pw"
DIM = 384


class HashEncoder:
    """A unit vector from each text's hash, counting the texts: the model's place without its cost."""

    def __init__(self):
        self.count = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.count += len(texts)
        out = np.empty((len(texts), DIM), np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(DIM)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def changing(instance: Instance, ids: list[str], per_page: int, seed: int):
    """An after_page hook: `per_page` random records change after every page, until 1 % have changed."""
    rng = random.Random(seed)
    budget = [len(ids) // 100]
    changed: set[str] = set()

    def hook(instance: Instance) -> None:
        for _ in range(min(per_page, budget[0])):
            sys_id = rng.choice(ids)
            instance.update("incident", sys_id, short_description=f"edited {rng.random():.6f}")
            changed.add(sys_id)
            budget[0] -= 1

    return hook, changed


def offset_read(url: str, page_size: int) -> list[str]:
    """The table read by sysparm_offset in update order, as an offset-paging client does: the sys_ids seen."""
    seen, offset = [], 0
    with httpx.Client(auth=(USER, PASSWORD), timeout=120) as client:
        while True:
            page = client.get(f"{url}/api/now/table/incident", params={
                "sysparm_query": "ORDERBYsys_updated_on^ORDERBYsys_id", "sysparm_fields": "sys_id,sys_updated_on",
                "sysparm_limit": str(page_size), "sysparm_offset": str(offset)}).json()["result"]
            seen += [r["sys_id"] for r in page]
            if len(page) < page_size:
                return seen
            offset += page_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=500, help="records changed before --since-last")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--model-texts", type=int, default=256, help="texts encoded by the real model for its rate")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    pages = -(-args.records // args.page_size)
    per_page = max(1, -(-(args.records // 100) // pages))
    work = Path(tempfile.mkdtemp(prefix="tickettune-pull-bench-"))
    lines = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    instance = Instance(users={USER: PASSWORD})
    instance.add_groups([f"Group {i}" for i in range(20)])
    instance.add_incidents(make_incidents(args.records, instance.group_ids, same_second=3))
    ids = list(instance.tables["incident"])
    credentials = Credentials(user=USER, password=PASSWORD)
    out = work / "incidents.json"
    with StandinServer(instance) as server:
        # 1. full pull while 1 % change between pages
        instance.after_page, changed = changing(instance, ids, per_page, seed=0)
        served = instance.records_served
        start = time.perf_counter()
        with TableClient(server.url, credentials) as client:
            summary = pull(client, Source(instance=server.url, page_size=args.page_size), out)
        full_s = time.perf_counter() - start
        instance.after_page = None
        result = json.loads(out.read_text())["result"]
        got = [r["sys_id"]["value"] for r in result]
        latest = sum(r["sys_updated_on"]["value"] == instance.tables["incident"][r["sys_id"]["value"]]["sys_updated_on"]
                     for r in result)
        say(f"| full pull, keyset (tickettune pull) | {args.records:,} | {len(changed):,} | {len(got):,} | "
            f"{len(set(got)):,} | {args.records - len(set(got) & set(ids)):,} | {latest:,} | "
            f"{summary.received:,} records + {instance.records_served - served - summary.received:,} sys_ids | "
            f"{summary.requests} | {full_s:.1f} |")
        # the same changes under an offset reader
        instance.after_page, moved = changing(instance, ids, per_page, seed=1)
        served = instance.records_served
        start = time.perf_counter()
        seen = offset_read(server.url, args.page_size)
        offset_s = time.perf_counter() - start
        instance.after_page = None
        say(f"| full read, offset paging (as pysnc) | {args.records:,} | {len(moved):,} | {len(seen):,} | "
            f"{len(set(seen)):,} | {args.records - len(set(seen)):,} | - | {instance.records_served - served:,} | "
            f"{pages} | {offset_s:.1f} |")

        # 2. --since-last after N changes (the file is re-pulled first, so that it holds the offset reader's edits)
        with TableClient(server.url, credentials) as client:
            pull(client, Source(instance=server.url, page_size=args.page_size), out, since_last=True)
        rng = random.Random(2)
        edited = rng.sample(ids, args.changes)
        for sys_id in edited:
            instance.update("incident", sys_id, short_description=f"since-last edit {rng.random():.6f}")
        time.sleep(1.1)  # the edits come before the pull, not in its first second (which pull would read twice)
        served = instance.records_served
        start = time.perf_counter()
        with TableClient(server.url, credentials) as client:
            summary = pull(client, Source(instance=server.url, page_size=args.page_size), out, since_last=True)
        since_s = time.perf_counter() - start
        say(f"| pull --since-last after {args.changes} changes | {args.records:,} | {args.changes} | "
            f"{summary.records:,} | - | - | {summary.changed} changed | {summary.received} records + "
            f"{instance.records_served - served - summary.received:,} sys_ids | {summary.requests} | {since_s:.1f} |")

        # 3. a service synced from the instance: encodes only the changed texts
        model = work / "model"
        model.mkdir()
        (model / "weights.bin").write_text("hash encoder")
        encoder = HashEncoder()
        start = time.perf_counter()
        live, _ = LiveTickets.open(read_ticket_file(out).frame, model, encoder, str(work / "store"), cache_dir=work / "cache")
        open_s = time.perf_counter() - start
        syncer = Syncer(Source(instance=server.url), credentials, live.store, tickets_file=out)
        for sys_id in rng.sample(ids, args.changes):
            instance.update("incident", sys_id, short_description=f"sync edit {rng.random():.6f}")
        time.sleep(1.1)
        before = encoder.count

        async def submit(call):
            return call(live)

        start = time.perf_counter()
        status = asyncio.run(syncer.sync_now(submit))
        sync_s = time.perf_counter() - start
        say(f"| serve --sync-from after {args.changes} changes | {len(live):,} | {args.changes} | - | - | - | "
            f"{status['changed']} applied, {encoder.count - before} encoded | - | - | {sync_s:.1f} |")

    # the real model's rate on pulled texts, for the encode time of a first sync
    import torch

    from tickettune.core.models import load_model
    from tickettune.core.similarity import encode_texts

    torch.set_num_threads(1)  # as `serve` runs on 2 cores (serve.default_threads)
    texts = list(read_ticket_file(out).frame["text"][:args.model_texts])
    loaded = load_model(args.model)
    encode_texts(loaded, texts[:16], show_progress=False)
    start = time.perf_counter()
    encode_texts(loaded, texts, show_progress=False)
    rate = len(texts) / (time.perf_counter() - start)

    note = (f"{args.model} (PyTorch, one torch thread) encodes {rate:.0f} pulled texts/s here: "
            f"a first sync or index of {args.records:,} incidents takes about {args.records / rate / 60:.0f} min to "
            f"encode; the service's own index of the file was opened in {open_s:.1f} s with the hash encoder. "
            f"'received' of --since-last counts the {OVERLAP_SECONDS} s re-read before the mark (pull.OVERLAP_SECONDS), "
            "which here also holds the edits made during the reads just before it.")
    body = (f"Stand-in Table API (uvicorn on 127.0.0.1, same machine) with {args.records:,} incidents, "
            f"{args.page_size} records a page; 1 % of the records change between the pages of the full reads "
            f"({per_page} after each page). A record is 'latest' when the file holds its newest version.\n\n"
            "| read | records | changed | in the file | distinct | missed | latest | received | requests | s |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(lines) + f"\n\n{note}\n")
    print(body)
    if not args.no_record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _results import append_under

        append_under("Pull", body)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
