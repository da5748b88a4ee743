"""Training and evaluation throughput: tickettune against the plain sentence-transformers trainer, on IT tickets.

    python benchmarks/speed.py                                  # 600 train / 300 test pairs, ~6 min on 2 idle cores
    python benchmarks/speed.py --train-pairs 150 --test-pairs 60 --no-record   # a quick check
    python benchmarks/speed.py --pairs DIR --seeds 0 1          # pairs from `tickettune pairs`, two seeds

The same model (all-MiniLM-L6-v2 + LoRA r16 from tickettune.training.lora.add_lora), loss, batch size,
max_seq_length, learning rate and schedule (the `recommended-pairs` preset's), seed and training pairs, trained
the same number of epochs by:

  plain       SentenceTransformerTrainer as its documentation shows it: the default random batch sampler,
              no evaluator during training;
  tickettune  tickettune.training.run.train: planned batches of texts of similar length (one phase by default, so
              that only the batching differs; --curriculum keeps the pairs' easy/medium/hard phases);
  bf16        the same with bf16 autocast (mixed_precision=bf16), where the CPU has bf16 instructions.

Training pairs/s count the trainer's own loop (tickettune's eval passes subtracted, as train() reports
them); quality is the test Spearman of each trained model, scored the same way. Each arm runs in its own
process, so its peak resident memory is its own; the load average at its start and end shows whether
other jobs shared the cores (an arm alone on 2 cores shows about 2). Evaluation throughput scores the test
pairs with the untuned model two ways at the same encode batch size: tickettune.evaluation.judge.pair_scores (each
distinct text once) and sentence-transformers' EmbeddingSimilarityEvaluator; texts/s counts the pair texts
scored (2 per pair) per second. Figures are printed and appended to benchmarks/RESULTS.md under "Speed".

The default sizes take ~6 minutes on 2 idle CPU cores, where a plain step of 32 ticket pairs padded to
~200 tokens takes ~10 s; other jobs on the cores slow every arm several-fold (see the load column).
Scale with --train-pairs, --test-pairs and --seeds (e.g. 1500/500 and two seeds on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TICKETS = SHARED / "it-service-tickets" / "tickets.csv.gz"
ARMS = ("plain", "tickettune", "bf16")
GOAL_RATIO = 1.5
MAX_SPEARMAN_GAP = 0.005
# Wide enough for the tables when the output is a file or pipe (rich assumes 80 columns there).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


# ---- in each arm's own process ----------------------------------------------------------------

def arm_config(settings: dict, seed: int, arm: str):
    """The one recipe every arm trains with; only mixed precision differs (bf16 arm)."""
    from tickettune.training.config import make_config, preset_values

    epochs = settings["epochs"]
    return make_config({
        **preset_values(settings["preset"]), "model_name": settings["model"], "seed": seed,
        "batch_size": settings["batch_size"], "max_seq_length": settings["max_seq_length"],
        "phase_epochs": [epochs] * 3 if settings["curriculum"] else [epochs],
        "mixed_precision": "bf16" if arm == "bf16" else "no",
        # Equal footing with the plain trainer: its final weights, no checkpoints; eval passes are timed apart.
        "save_best_model": False, "save_steps": None, "eval_subset": settings["eval_subset"],
        "bootstrap_resamples": 100,
    })


def test_spearman(model, pairs) -> float:
    from tickettune.core.similarity import pair_scores
    from tickettune.evaluation.judge import compute_metrics

    return compute_metrics(pairs.test["label"].to_numpy(float), pair_scores(model, pairs.test))["spearman"]


def plain_arm(config, pairs, epochs: int) -> dict:
    """(a) SentenceTransformerTrainer with its default random batches and the same LoRA, loss, lr and schedule."""
    import torch
    import transformers
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from tickettune.core.models import load_model
    from tickettune.training.lora import add_lora
    from tickettune.training.losses import build_loss

    model = load_model(config.model_name, config.max_seq_length)
    transformers.set_seed(config.seed)
    add_lora(model, config)
    train = pairs.train
    data = Dataset.from_dict({"text1": train["text1"].astype(str).tolist(), "text2": train["text2"].astype(str).tolist(),
                              "label": train["label"].astype("float32").tolist()})
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, num_train_epochs=epochs,
            per_device_train_batch_size=config.batch_size, learning_rate=config.lr, weight_decay=config.weight_decay,
            lr_scheduler_type={"warmup_cosine": "cosine"}.get(config.scheduler, config.scheduler),
            warmup_steps=config.warmup_ratio if config.warmup_ratio is not None else config.warmup_steps,
            seed=config.seed, data_seed=config.seed, save_strategy="no", eval_strategy="no", logging_steps=10,
            disable_tqdm=True, report_to=[], use_cpu=not torch.cuda.is_available())
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=build_loss(config, model))
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"train_seconds": seconds, "pairs": len(train) * epochs, "steps": trainer.state.global_step,
            "spearman": test_spearman(model, pairs)}


def tickettune_arm(config, pairs, out: Path, curriculum: bool) -> dict:
    """(b)/(c) tickettune.training.run.train: length-grouped planned batches, everything it does except the pass timing."""
    from tickettune.training.run import train

    result = train(config, pairs, out, overwrite=True, show_progress=False, phases="keep" if curriculum else "single")
    log = result.log
    return {"train_seconds": log["train_seconds"], "pairs": sum(p["pairs"] for p in log["phases"]),
            "steps": log["total_steps"], "spearman": result.metrics[pairs.test_name]["model"]["spearman"],
            "untuned_spearman": result.metrics[pairs.test_name]["baseline"]["spearman"]}


def eval_arm(settings: dict, pairs) -> dict:
    """Score the test pairs with the untuned model: pair_scores vs EmbeddingSimilarityEvaluator, best of N runs each."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from tickettune.core.models import load_model
    from tickettune.core.similarity import pair_scores
    from tickettune.evaluation.judge import compute_metrics

    model = load_model(settings["model"], settings["max_seq_length"])
    test, batch = pairs.test, settings["eval_batch_size"]
    model.encode(list(test["text1"][:batch]), batch_size=batch)  # one-off allocations outside the timing
    evaluator = EmbeddingSimilarityEvaluator(list(test["text1"]), list(test["text2"]), list(test["label"]),
                                             batch_size=batch, main_similarity="cosine", write_csv=False)
    times: dict[str, list[float]] = {"tickettune": [], "sentence-transformers": []}
    for _ in range(settings["eval_repeats"]):  # interleaved, so both see the same load on shared cores
        started = time.perf_counter()
        scores = pair_scores(model, test, batch_size=batch)
        times["tickettune"].append(time.perf_counter() - started)
        started = time.perf_counter()
        st_metrics = evaluator(model)
        times["sentence-transformers"].append(time.perf_counter() - started)
    return {"pairs": len(test), "distinct_texts": len(set(test["text1"]) | set(test["text2"])),
            "seconds": {k: min(v) for k, v in times.items()},
            "spearman": {"tickettune": compute_metrics(test["label"].to_numpy(float), scores)["spearman"],
                         "sentence-transformers": float(st_metrics["spearman_cosine"])}}


def run_arm(arm: str, seed: int, work: Path) -> None:
    """Child process: run one arm and write its figures (with this process's peak memory) to work/ARM-SEED.json."""
    from tickettune.core.models import offline_environment
    from tickettune.training.dataset import load_pairs

    offline_environment()
    settings = json.loads((work / "settings.json").read_text())
    if settings["threads"]:
        import torch

        torch.set_num_threads(settings["threads"])
    pairs = load_pairs(settings["pairs"])
    started, load = time.perf_counter(), os.getloadavg()[0]
    if arm == "eval":
        result = eval_arm(settings, pairs)
    else:
        config = arm_config(settings, seed, arm)
        result = plain_arm(config, pairs, settings["epochs"]) if arm == "plain" else \
            tickettune_arm(config, pairs, work / f"run-{arm}-{seed}", settings["curriculum"])
    # Other jobs on the cores show as a load above this arm's own threads: such a timing is suspect.
    result.update(arm=arm, seed=seed, wall_seconds=time.perf_counter() - started, load=[load, os.getloadavg()[0]],
                  peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    (work / f"{arm}-{seed}.json").write_text(json.dumps(result))


# ---- the parent: pairs, one process per arm, tables ------------------------------------------------

def bf16_support() -> str | None:
    """None when bf16 autocast can run natively here, else why not."""
    import torch

    if torch.cuda.is_available():
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16 instructions"
    return None


def prepare_pairs(args, work: Path) -> str:
    """The pairs every arm reads: --pairs DIR, or IT-ticket pairs built with TF-IDF difficulty (no model needed)."""
    if args.pairs:
        return str(args.pairs)
    from tickettune.data.pairs import PairOptions, build_pairs, write_pair_dir
    from tickettune.data.tickets import read_tickets

    tickets = read_tickets(args.tickets, text_columns=["text"], group_by="topic_group")
    options = PairOptions(seed=0, difficulty="tfidf", pairs_per_phase=args.train_pairs // 3,
                          eval_pairs=args.eval_pairs, test_pairs=args.test_pairs)
    return str(write_pair_dir(build_pairs(tickets, options), work / "pairs"))


def launch(arm: str, seed: int, work: Path) -> dict:
    """Run one arm in a fresh Python process; a failure is reported, not fatal."""
    command = [sys.executable, __file__, "--arm", arm, "--seed", str(seed), "--work", str(work)]
    console.print(f"[bold]{arm}[/bold] (seed {seed}) ...")
    code = subprocess.run(command).returncode
    path = work / f"{arm}-{seed}.json"
    if code or not path.is_file():
        return {"arm": arm, "seed": seed, "failed": f"exit code {code}"}
    result = json.loads(path.read_text())
    if "train_seconds" in result:
        console.print(f"  {result['pairs'] / result['train_seconds']:.1f} pairs/s, test Spearman {result['spearman']:.4f}, "
                      f"peak {result['peak_mib']:.0f} MiB")
    return result


def against_plain(runs: list[dict]) -> list[tuple[dict, float | None, float | None]]:
    """Each finished run with its pairs/s ratio and test Spearman gap to the plain trainer of the same seed."""
    plain = {r["seed"]: r for r in runs if r["arm"] == "plain" and "failed" not in r}
    out = []
    for r in runs:
        base = plain.get(r["seed"])
        if "failed" in r or base is None:
            out.append((r, None, None))
            continue
        ratio = (r["pairs"] / r["train_seconds"]) / (base["pairs"] / base["train_seconds"])
        out.append((r, ratio, r["spearman"] - base["spearman"]))
    return out


def training_rows(runs: list[dict]) -> list[list[str]]:
    rows = []
    for r, ratio, gap in against_plain(runs):
        if "failed" in r:
            rows.append([r["arm"], str(r["seed"]), f"failed ({r['failed']})"] + [""] * 8)
            continue
        rows.append([r["arm"], str(r["seed"]), f"{r['steps']}", f"{r['pairs']:,}", f"{r['train_seconds']:.1f}",
                     f"{r['pairs'] / r['train_seconds']:.2f}", "-" if ratio is None else f"{ratio:.2f}x",
                     f"{r['spearman']:.4f}", "-" if gap is None else f"{gap:+.4f}", f"{r['peak_mib']:,.0f}",
                     "{:.1f} / {:.1f}".format(*r["load"])])
    return rows


TRAIN_HEADER = ["arm", "seed", "steps", "pairs", "train s", "pairs/s", "vs plain", "test Spearman", "Δ vs plain",
                "peak MiB", "load start / end"]
EVAL_HEADER = ["evaluation", "pair texts", "texts encoded", "seconds", "texts/s", "vs ST", "test Spearman"]


def eval_rows(result: dict) -> list[list[str]]:
    texts = 2 * result["pairs"]
    st = result["seconds"]["sentence-transformers"]
    encoded = {"tickettune": result["distinct_texts"], "sentence-transformers": texts}
    names = {"tickettune": "tickettune pair_scores", "sentence-transformers": "ST EmbeddingSimilarityEvaluator"}
    return [[names[k], f"{texts:,}", f"{encoded[k]:,}", f"{s:.2f}", f"{texts / s:.1f}", f"{st / s:.2f}x",
             f"{result['spearman'][k]:.4f}"] for k, s in result["seconds"].items()]


def verdicts(runs: list[dict], evaluation: dict | None) -> list[str]:
    """One line per claim: the mean training ratio and Spearman gap over seeds, per tickettune arm."""
    compared = against_plain(runs)
    lines = []
    for arm in ("tickettune", "bf16"):
        mine = [(ratio, gap) for r, ratio, gap in compared if r["arm"] == arm and ratio is not None]
        if not mine:
            continue
        ratios, gaps = zip(*mine)
        lines.append(f"{arm}: training {np.mean(ratios):.2f}x the plain trainer's pairs/s "
                     f"({'meets' if np.mean(ratios) >= GOAL_RATIO else 'MISSES'} the {GOAL_RATIO}x goal); test Spearman "
                     f"{np.mean(gaps):+.4f} vs plain ({'within' if abs(np.mean(gaps)) <= MAX_SPEARMAN_GAP else 'OUTSIDE'} "
                     f"±{MAX_SPEARMAN_GAP}" + (f"; per seed {', '.join(f'{g:+.4f}' for g in gaps)}" if len(gaps) > 1 else "")
                     + ")")
    plain = [r["spearman"] for r, _, _ in compared if r["arm"] == "plain" and "failed" not in r]
    if len(plain) > 1:
        lines.append(f"seed-to-seed spread of the plain trainer's test Spearman: {max(plain) - min(plain):.4f}")
    if evaluation is not None and "failed" not in evaluation:
        seconds = evaluation["seconds"]
        lines.append(f"evaluation: tickettune {seconds['sentence-transformers'] / seconds['tickettune']:.2f}x the texts/s of "
                     f"EmbeddingSimilarityEvaluator ({evaluation['distinct_texts']} distinct of {2 * evaluation['pairs']} "
                     f"pair texts)")
    return lines


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="left" if name in ("arm", "evaluation") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, help="directory made by `tickettune pairs` (default: build IT-ticket pairs)")
    parser.add_argument("--tickets", type=Path, default=TICKETS, help="ticket file to build pairs from")
    parser.add_argument("--train-pairs", type=int, default=600, help="training pairs to build (a third per phase)")
    parser.add_argument("--eval-pairs", type=int, default=60, help="eval pairs (tickettune's passes, timed apart)")
    parser.add_argument("--test-pairs", type=int, default=300)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--preset", default="recommended-pairs", help="lr, schedule, loss and LoRA of every arm (a pair "
                        "recipe: the plain trainer it is timed against trains on pairs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=256, help="ticket lengths vary widely: keep long ones")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--curriculum", action="store_true", help="tickettune trains the easy/medium/hard phases in order")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="encode batch of both evaluations")
    parser.add_argument("--eval-repeats", type=int, default=2, help="evaluation timings: best of this many")
    parser.add_argument("--threads", type=int, help="torch threads of every arm (default: torch's, one per core); "
                        "1 keeps the timings steady when other jobs share the cores")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    from tickettune.training.config import make_config, preset_values

    args = parse_args()
    if args.arm:
        run_arm(args.arm, args.seed, args.work)
        return
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms) - set(ARMS)
    if unknown:
        sys.exit(f"--arms: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ARMS)}")
    if not args.pairs and not args.tickets.is_file():
        sys.exit(f"no tickets at {args.tickets}; pass --tickets FILE or --pairs DIR")
    notes = []
    if "bf16" in arms and (why := bf16_support()):
        arms.remove("bf16")
        notes.append(f"bf16 arm skipped: {why}")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = {"pairs": prepare_pairs(args, work), "model": args.model, "preset": args.preset,
                    "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "epochs": args.epochs,
                    "curriculum": args.curriculum, "eval_subset": args.eval_pairs,
                    "eval_batch_size": args.eval_batch_size, "eval_repeats": args.eval_repeats, "threads": args.threads}
        (work / "settings.json").write_text(json.dumps(settings))
        runs = [launch(arm, seed, work) for seed in args.seeds for arm in arms]
        evaluation = launch("eval", args.seeds[0], work)
    minutes = (time.perf_counter() - started) / 60
    untuned = next((r["untuned_spearman"] for r in runs if "untuned_spearman" in r), None)
    loss = make_config(preset_values(args.preset)).loss
    described = (f"{args.model} + LoRA (`{args.preset}` preset's r, lr, schedule, loss: {loss}), batch {args.batch_size}, "
                 f"max_seq_length {args.max_seq_length}, {args.epochs} epoch(s), "
                 + (f"pairs {args.pairs}" if args.pairs else
                    f"IT-ticket pairs ({args.train_pairs} train, {args.test_pairs} test; TF-IDF difficulty)")
                 + f"; tickettune {'with curriculum phases' if args.curriculum else 'in one phase'}; seeds "
                 + " ".join(map(str, args.seeds))
                 + f"; torch threads {args.threads or 'default (one per core)'}; load average at the start "
                 f"{load:.2f}; total {minutes:.1f} min" + (f"; untuned test Spearman {untuned:.4f}" if untuned else ""))
    train_rows = training_rows(runs)
    print_table("Training throughput and quality (same pairs, model, loss, batch size, lr, epochs)", TRAIN_HEADER,
                train_rows)
    lines = verdicts(runs, evaluation)
    body = described + "\n\n" + markdown(TRAIN_HEADER, train_rows)
    if "failed" in evaluation:
        notes.append(f"evaluation timing failed ({evaluation['failed']})")
    else:
        rows = eval_rows(evaluation)
        print_table(f"Evaluation throughput ({evaluation['pairs']} test pairs, untuned model, encode batch "
                    f"{args.eval_batch_size}, best of {args.eval_repeats})", EVAL_HEADER, rows)
        body += "\n\n" + markdown(EVAL_HEADER, rows)
    for line in lines + notes:
        console.print(line)
    body += "\n\n" + "\n".join(f"- {line}" for line in lines + notes)
    if not args.no_record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import append_under

        append_under("Speed", body)


if __name__ == "__main__":
    main()
