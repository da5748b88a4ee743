"""Similar-ticket search at 10k, 100k and 1M tickets: index build time, query latency and recall@10.

The vectors are synthetic, 384-dimensional like all-MiniLM-L6-v2's: tickets fall in clusters of
about 100 around random topic directions, two tickets of a topic at cosine ~0.6 (as incidents of
one problem are under MiniLM), and each query is a perturbed ticket (cosine ~0.9 to it). Looser
clusters make recall@10 meaningless at 1M: random 384-d directions reach cosine ~0.25 by chance
among a million (sd 0.051, max ~4.9 sd), so the exact top-10 would hold chance hits no index can
find. The exact scan is the reference for the recall@10 of the FAISS IVF index; `auto` is
the backend `tickettune search` picks at that size. Query latency is one query at a time, as the
CLI asks. Build time excludes encoding (the model's cost, the same for every backend).

    python benchmarks/search.py                        # 10k, 100k, 1M; appends to RESULTS.md
    python benchmarks/search.py --sizes 10000 --no-record
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tickettune.serving.index import IVF_PROBES, IVF_TRAIN_PER_CELL, VectorIndex, choose_backend

DIM = 384
PROBES = (8, 16, 32, 64)  # IVF cells scanned per query; tickettune's default is IVF_PROBES


def clustered_vectors(n: int, rng: np.random.Generator, per_topic: int = 100, noise: float = 0.04) -> np.ndarray:
    """`n` unit vectors scattered around n/per_topic random unit topic directions (built in blocks to bound memory)."""
    topics = rng.standard_normal((max(1, n // per_topic), DIM), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = topics[rng.integers(0, len(topics), stop - start)]
        block += rng.standard_normal(block.shape, dtype=np.float32) * noise
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def perturbed(vectors: np.ndarray, count: int, rng: np.random.Generator, noise: float = 0.025) -> np.ndarray:
    queries = vectors[rng.integers(0, len(vectors), count)] + rng.standard_normal((count, DIM), dtype=np.float32) * noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def latency_ms(index: VectorIndex, queries: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Median and 95th percentile of one-query search time, in milliseconds."""
    index.search(queries[:1], k)  # the first call pays one-off allocations
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search(query, k)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def measure(n: int, n_queries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    vectors = clustered_vectors(n, rng)
    queries = perturbed(vectors, n_queries, rng)
    exact = VectorIndex(vectors, backend="exact")
    _, truth = exact.search(queries, 10)
    row = {"n": n, "auto": choose_backend(n)}
    row["exact_p50"], row["exact_p95"] = latency_ms(exact, queries[:min(n_queries, 100)])
    start = time.perf_counter()
    ivf = VectorIndex(vectors, backend="ivf")
    row["ivf_build_s"], row["cells"] = time.perf_counter() - start, ivf.faiss_index.nlist
    for probes in PROBES:
        ivf.n_probe = probes
        row[f"p50_{probes}"], row[f"p95_{probes}"] = latency_ms(ivf, queries)
        row[f"recall_{probes}"] = recall_at(ivf.search(queries, 10)[1], truth)
    ivf.n_probe = IVF_PROBES
    with tempfile.TemporaryDirectory() as tmp:
        chosen = ivf if row["auto"] == "ivf" else exact
        start = time.perf_counter()
        chosen.save(Path(tmp))
        row["save_s"] = time.perf_counter() - start
        start = time.perf_counter()
        VectorIndex.load(Path(tmp), row["auto"]).search(queries[0], 10)  # mapped lazily: count the first search
        row["load_s"] = time.perf_counter() - start
    return row


def table(rows: list[dict]) -> str:
    lines = ["| tickets | auto backend | exact query p50 / p95 (ms) | IVF cells | IVF build (s) | "
             + " | ".join(f"IVF {p} probes: p50 / p95 (ms), recall@10" for p in PROBES)
             + " | cache save / load + first query, auto (s) |", "|---:|---|---:|---:|---:|" + "---:|" * len(PROBES) + "---:|"]
    for r in rows:
        probes = " | ".join(f"{r[f'p50_{p}']:.2f} / {r[f'p95_{p}']:.2f}, {r[f'recall_{p}']:.3f}" for p in PROBES)
        lines.append(f"| {r['n']:,} | {r['auto']} | {r['exact_p50']:.2f} / {r['exact_p95']:.2f} | {r['cells']} "
                     f"| {r['ivf_build_s']:.1f} | {probes} | {r['save_s']:.2f} / {r['load_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    import faiss
    from threadpoolctl import threadpool_info

    rows = []
    for n in args.sizes:
        rows.append(measure(n, args.queries, args.seed))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    blas = ", ".join(sorted({f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()}))
    body = (f"Synthetic clustered unit vectors, dim {DIM}, {args.queries} queries (exact latency over at most 100), "
            f"k=10. IVF-Flat, k-means on {IVF_TRAIN_PER_CELL} vectors per cell, tickettune scans {IVF_PROBES} cells; "
            f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads; numpy BLAS: {blas}"
            f"{', OPENBLAS_CORETYPE=' + os.environ['OPENBLAS_CORETYPE'] if 'OPENBLAS_CORETYPE' in os.environ else ''}.\n\n"
            + table(rows))
    print(body)
    if not args.no_record:
        from _results import append_under

        append_under("Search", body)


if __name__ == "__main__":
    main()
