"""Exported all-MiniLM-L6-v2 on CPU: texts/s and STS Benchmark test Spearman of PyTorch, ONNX and ONNX int8.

Exports the model with `tickettune.training.export.export_model` (merged folder + ONNX + int8). Speed: the
forms take turns encoding the same 512 STS sentences (batch 32), three rounds, best round kept, so
that other work on the shared cores slows every form alike rather than whichever ran then.
Spearman: every distinct sentence of sts-test.csv encoded once, pairs scored by cosine. The ONNX
forms must stay within 0.01 Spearman of PyTorch.

    python benchmarks/export.py                       # appends to RESULTS.md
    python benchmarks/export.py --sts PATH --no-record
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from tickettune.core.similarity import pair_scores
from tickettune.data.pairs_io import read_pairs
from tickettune.training.export import export_model

STS_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsbenchmark" / "sts-test.csv"
MAX_SPEARMAN_DROP = 0.01


def best_speeds(models: list, texts: list[str], batch_size: int, rounds: int = 3) -> list[float]:
    """Texts per second of each model, the best of `rounds` turns in which the models alternate."""
    for model in models:
        model.encode(texts[:64], batch_size=batch_size)  # one-off allocations and graph set-up
    best = [0.0] * len(models)
    for _ in range(rounds):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model.encode(texts, batch_size=batch_size)
            best[i] = max(best[i], len(texts) / (time.perf_counter() - start))
    return best


def sts_spearman(model, pairs, batch_size: int) -> float:
    """Spearman of cosine against the gold scores (each distinct sentence encoded once)."""
    return float(spearmanr(pairs["label"], pair_scores(model, pairs, batch_size=batch_size)).statistic)


def load_forms(model_name: str, folder: Path, onnx_file: str, int8_file: str, threads: int) -> list:
    """(name, model) of PyTorch, ONNX and ONNX int8, each computing on `threads` threads."""
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    from tickettune.core.models import load_model

    torch.set_num_threads(threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    onnx = [SentenceTransformer(str(folder), backend="onnx", device="cpu",
                                model_kwargs={"file_name": file, "session_options": options}) for file in (onnx_file, int8_file)]
    return [("PyTorch", load_model(model_name)), ("ONNX", onnx[0]), ("ONNX int8", onnx[1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--sts", type=Path, default=STS_TEST)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    import onnxruntime

    pairs = read_pairs(args.sts)
    sentences = sorted(set(pairs["text1"]) | set(pairs["text2"]))
    sample = [sentences[i] for i in np.random.default_rng(0).choice(len(sentences), 512, replace=False)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        start = time.perf_counter()
        result = export_model(args.model, folder, merge=True, onnx=True, quantize="int8")
        export_s = time.perf_counter() - start
        files = ["model.safetensors", result.onnx_file, result.quantized_file]
        sizes = [(folder / file).stat().st_size / 2**20 for file in files]
        speeds = {}
        for threads in args.threads:
            forms = load_forms(args.model, folder, result.onnx_file, result.quantized_file, threads)
            speeds[threads] = best_speeds([model for _, model in forms], sample, args.batch_size)
            print(f"{threads} threads: " + ", ".join(f"{name} {speed:.0f} texts/s"
                                                      for (name, _), speed in zip(forms, speeds[threads])), flush=True)
        spearmans = [sts_spearman(model, pairs, args.batch_size) for _, model in forms]
    names = [name for name, _ in forms]
    lines = ["| form | file | size (MiB) | " + " | ".join(f"texts/s, {t} thread{'s' * (t > 1)}" for t in args.threads)
             + " | STS test Spearman | change vs PyTorch |", "|---|---|---:|" + "---:|" * len(args.threads) + "---:|---:|"]
    for i, name in enumerate(names):
        lines.append(f"| {name} | {files[i]} | {sizes[i]:.1f} | " + " | ".join(f"{speeds[t][i]:.0f}" for t in args.threads)
                     + f" | {spearmans[i]:.4f} | {spearmans[i] - spearmans[0]:+.4f} |")
    drop = spearmans[0] - min(spearmans)
    body = (f"{args.model} exported by `tickettune.training.export.export_model` in {export_s:.0f} s (min cosine to the source "
            f"on probe texts: " + ", ".join(f"{k} {v:.5f}" for k, v in result.cosines.items()) + "). "
            f"Speed: best of 3 alternating rounds over 512 STS sentences, batch {args.batch_size}, torch and "
            f"onnxruntime {onnxruntime.__version__} limited to the stated threads (on shared cores one thread is the "
            f"steadier figure: a thread that waits for a descheduled partner stalls both). Spearman: "
            f"{len(pairs)} STS test pairs, each distinct sentence encoded once.\n\n" + "\n".join(lines)
            + f"\n\nLargest Spearman drop vs PyTorch: {drop:.4f} "
            f"({'within' if drop <= MAX_SPEARMAN_DROP else 'OVER'} the {MAX_SPEARMAN_DROP} limit).")
    print(body)
    if not args.no_record:
        from _results import append_under

        append_under("Export", body)


if __name__ == "__main__":
    main()
