"""Which int8 file `tickettune export --onnx --quantize int8` should write: candidate quantizations of one fp32 ONNX
export, each judged by the serve benchmark's retrieval quality (precision@10 against PyTorch's) and by its speed.

Setting as in `benchmarks/serve.py`: an index of `--tickets` tickets (`--unique` distinct synthetic incidents
repeated), encoded by the fp32 ONNX file (PyTorch's embeddings), and held-out incidents that belong to a problem
sent as queries, each encoder encoding only the queries; precision@10 is the share of a query's 10 nearest tickets
that belong to its problem. The index's 100,000 rows are the distinct incidents' vectors repeated as serve.py's
ticket file repeats them, so the figures are those the servers would give (exact search), without the servers.
Candidates are chosen on one query set (`--select-seed`) and reported on serve.py's own (`--report-seed`, seed 1)
as well, so that a choice tuned to its queries shows as such.

Speed: texts/s encoding `--speed-texts` of the query texts one per pass (as the service's ONNX encoder does), on
one ONNX Runtime intra-op thread, the candidates taking turns for 3 rounds, the best round kept.

    python benchmarks/quantize.py                           # appends to RESULTS.md (Export)
    python benchmarks/quantize.py --unique 600 --tickets 10000 --speed-texts 32 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve import write_tickets  # noqa: E402
from tickettune.core.models import PROBE_TEXTS  # noqa: E402
from tickettune.data.sample import generate_sample  # noqa: E402
from tickettune.serving.encoders import Encoder, EncoderChoice  # noqa: E402
from tickettune.serving.search import read_ticket_file  # noqa: E402
from tickettune.training.export import export_model, quantization_target, quantize_int8  # noqa: E402

# name: how the file is made. ("preset", P): sentence-transformers' export_dynamic_quantized_onnx_model with optimum's
# preset P (what export wrote before); a dict: tickettune.training.export.quantize_int8's options.
CANDIDATES = {
    "preset avx2 (quint8)": ("preset", "avx2"),
    "preset avx512_vnni (qint8)": ("preset", "avx512_vnni"),
    "ort qint8, all ops, per-tensor": {"weight_type": "QInt8", "per_channel": False, "op_types": ()},
    "ort qint8 per-channel, all ops": {"weight_type": "QInt8", "op_types": ()},
    "ort qint8 per-channel, MatMul": {"weight_type": "QInt8"},
    "ort quint8 per-channel, MatMul": {"weight_type": "QUInt8"},
    "ort qint8 per-tensor, MatMul": {"weight_type": "QInt8", "per_channel": False},
    "ort qint8 per-channel, MatMul, last layer float": {"weight_type": "QInt8", "keep_last": 6},
    "ort qint8 per-channel, MatMul incl. attention products": {"weight_type": "QInt8", "const_b_only": False},
}


def make_candidates(export: Path, names: list[str]) -> dict[str, str]:
    """Write each candidate's file into the export's onnx folder (once); name -> file relative to the export."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    files = {}
    for name in names:
        i, how = list(CANDIDATES).index(name), CANDIDATES[name]
        file = f"onnx/candidate_{i}_int8.onnx"
        if not (export / file).is_file():
            if isinstance(how, tuple):
                fp32 = SentenceTransformer(str(export), backend="onnx", device="cpu",
                                           model_kwargs={"file_name": "onnx/model.onnx"})
                export_dynamic_quantized_onnx_model(fp32, how[1], str(export), file_suffix=f"preset_{i}")
                (export / f"onnx/model_preset_{i}.onnx").rename(export / file)
            else:
                quantize_int8(export / "onnx/model.onnx", export / file, **how)
        files[name] = file
    return files


def held_out(seed: int, count: int) -> tuple[list[str], list[str]]:
    """serve.py's query texts (short description + description) of incidents that belong to a problem, and problems."""
    queries = generate_sample(2000, seed=seed)
    pairs = [(f"{s}\n{d}".strip(), p) for s, d, p in zip(queries["short_description"], queries["description"],
                                                       queries["problem_id"]) if p]
    pairs = pairs[:count] if count else pairs
    return [t for t, _ in pairs], [p for _, p in pairs]


def precision_at_10(queries: np.ndarray, index: np.ndarray, rows: np.ndarray, problems: np.ndarray,
                    wanted: list[str]) -> float:
    """Mean share of each query's 10 best rows (rows[i] = the distinct incident of ticket i) in its problem."""
    shares = []
    for start in range(0, len(queries), 64):
        scores = (queries[start:start + 64] @ index.T)[:, rows]
        best = np.argpartition(-scores, 10, axis=1)[:, :10]
        for hits, problem in zip(best, wanted[start:start + 64]):
            shares.append(float(np.mean(problems[rows[hits]] == problem)))
    return float(np.mean(shares))


def nearest(queries: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each query's nearest distinct incident (row of `index`)."""
    return np.concatenate([np.argmax(queries[i:i + 256] @ index.T, axis=1) for i in range(0, len(queries), 256)])


def speeds(encoders: dict[str, Encoder], texts: list[str], rounds: int = 3) -> dict[str, float]:
    """Texts/s of each encoder, one text per pass, the best of `rounds` turns taken in rotation."""
    best = dict.fromkeys(encoders, 0.0)
    for encoder in encoders.values():
        encoder.encode(texts[:8])
    for _ in range(rounds):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            for text in texts:
                encoder.model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--unique", type=int, default=6_000)
    parser.add_argument("--select-seed", type=int, default=2, help="query set the choice is made on")
    parser.add_argument("--report-seed", type=int, default=1, help="serve.py's query set")
    parser.add_argument("--queries", type=int, default=0, help="held-out queries per set (0: all)")
    parser.add_argument("--speed-texts", type=int, default=200)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES), metavar="NAME")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tickettune-quantize-bench"))
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    export = args.work / f"export-{Path(args.model).name}"
    if not export.is_dir():
        export_model(args.model, export, merge=False, onnx=True)
    files = make_candidates(export, args.candidates)

    tickets = args.work / f"tickets-{args.unique}.csv"
    write_tickets(tickets, args.unique, args.unique, seed=0)
    frame = read_ticket_file(tickets)
    problems = np.array(generate_sample(args.unique, 0)["problem_id"].tolist(), dtype=object)[
        [int(n[3:]) - 1 for n in frame["number"]]]
    rows = np.arange(args.tickets) % len(frame)
    fp32 = Encoder(EncoderChoice(export, "onnx", "onnx/model.onnx"), threads=1)
    cached = args.work / f"index-{args.unique}.npy"
    if cached.is_file():
        index = np.load(cached)
    else:
        index = fp32(list(frame["text"]))
        np.save(cached, index)

    sets = {"select": held_out(args.select_seed, args.queries), "report": held_out(args.report_seed, args.queries)}
    torch_encoder = Encoder.of(args.model, backend="torch")
    reference = {key: torch_encoder.encode(texts) for key, (texts, _) in sets.items()}
    results = {"PyTorch": {key: precision_at_10(reference[key], index, rows, problems, sets[key][1]) for key in sets}}
    results["PyTorch"].update(probe=1.0, query_cos=1.0, mean_cos=1.0, same=1.0, size=float("nan"))
    # Precision@10 here is nearly precision@1 over the distinct incidents (each repeated >10 times), so a candidate
    # moves it by whole queries whose nearest incident changed, either way: how often it changed (against PyTorch's)
    # and the mean cosine to PyTorch's query vectors say how close a candidate is, beside what that did to precision.
    top = {key: nearest(reference[key], index) for key in sets}
    encoders = {}
    for name, file in files.items():
        encoder = Encoder(EncoderChoice(export, "onnx", file), threads=1).load()
        encoders[name] = encoder
        vectors = {key: encoder.encode(texts) for key, (texts, _) in sets.items()}
        results[name] = {key: precision_at_10(vectors[key], index, rows, problems, sets[key][1]) for key in sets}
        results[name].update(
            probe=encoder.agreement(torch_encoder.probe), size=(export / file).stat().st_size / 2**20, file=file,
            query_cos=float(min(np.min(np.einsum("ij,ij->i", vectors[k], reference[k])) for k in sets)),
            mean_cos=float(np.mean(np.concatenate([np.einsum("ij,ij->i", vectors[k], reference[k]) for k in sets]))),
            same=float(np.mean(np.concatenate([nearest(vectors[k], index) == top[k] for k in sets]))))
        print(f"{name}: {results[name]}", flush=True)
    speed = speeds({"PyTorch": torch_encoder, **encoders}, sets["report"][0][:args.speed_texts])
    base = results["PyTorch"]
    lines = ["| encoder | size (MiB) | precision@10, selection set | change | precision@10, serve.py's set | change "
             "| lowest cosine to PyTorch, probes / queries | mean query cosine to PyTorch | same nearest incident as "
             "PyTorch | texts/s, 1 thread |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        size = "" if name == "PyTorch" else f"{r['size']:.1f}"
        lines.append(f"| {name} | {size} | {r['select']:.4f} "
                     f"| {r['select'] - base['select']:+.4f} | {r['report']:.4f} | {r['report'] - base['report']:+.4f} "
                     f"| {r['probe']:.4f} / {r['query_cos']:.4f} | {r['mean_cos']:.5f} | {r['same']:.4f} "
                     f"| {speed.get(name, float('nan')):.0f} |")
    body = (f"{args.model}: int8 candidates of one fp32 ONNX export (ONNX Runtime {onnxruntime.__version__}, this CPU's "
            f"preset target {quantization_target()}). Index: {args.tickets:,} tickets ({len(frame):,} distinct "
            f"synthetic incidents repeated as benchmarks/serve.py writes them), encoded by the fp32 ONNX file; "
            f"queries encoded by each encoder: held-out incidents that belong to a problem, "
            f"{len(sets['select'][0])} of seed {args.select_seed} (the selection set) and {len(sets['report'][0])} of "
            f"seed {args.report_seed} (serve.py's queries); precision@10 by exact search. Speed: "
            f"{min(args.speed_texts, len(sets['report'][0]))} query texts one per pass, one ONNX Runtime thread, best "
            f"of 3 rounds in rotation. Lowest cosine to PyTorch: over the {len(PROBE_TEXTS)} probe texts (a server "
            f"refuses an index below 0.99) and over all queries; \"same nearest incident\": the share of queries "
            f"(both sets) whose "
            f"nearest distinct incident is PyTorch's.\n\n" + "\n".join(lines))
    print(body)
    if not args.no_record:
        from _results import append_under

        append_under("Export", body, title="Export: int8 candidates")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
