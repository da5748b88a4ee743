"""The head stage of `train`: the encoder stays frozen and a linear head (head.py) learns from its cached vectors.

`train_head(config, pairs, out)` is what `train` runs when config.stage == "head", in six steps:

1. vectors: the untuned encoder's, through the on-disk VectorCache (vector_cache.py); this machine's encoding
   speed is measured on the first texts that have to be encoded anyway, so measuring costs nothing;
2. budget (budget.py): held-out texts first, then as many train tickets as the budget encodes (cached ones are
   free), and the head's epochs; max_train_tickets caps it;
3. fit (head.fit_head) with the objective the labels allow (head.label_kind: coarse groups push apart only,
   problem links also pull together; agents' verdicts of `--feedback`, when given, a pair term), each epoch scored
   on the eval set by eval_metric, the best epoch kept
   (the identity, i.e. the untuned encoder, included: a head that never helps on eval is not kept);
4. update scale: the change scaled back towards the identity by each of update_scales, the best on eval kept
   (the smaller scale on a tie);
5. judge: tuned and untuned on the test tickets, same-problem probes and pairs, from the same cached vectors;
6. write: the encoder's modules + Dense + Normalize as one sentence-transformers folder, checked to give the
   head's vectors (cosine >= 0.9999 on some test texts) before OUT is written (outputs.write_run).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.files import check_output_dir
from tickettune.core.similarity import pair_cosines
from tickettune.core.vector_cache import CachedEncoder
from tickettune.data import leakage
from tickettune.evaluation.judge import compute_metrics, judge
from tickettune.evaluation.report import fmt
from tickettune.evaluation.retrieval import RETRIEVAL_KEYS, corpus_metrics, query_rows
from tickettune.training.budget import BudgetPlan, Throughput, budget_seconds, plan_head_budget
from tickettune.training.config import TrainConfig
from tickettune.training.dataset import TrainingData, eval_tickets, load_pairs, refuse_test_texts_in_training
from tickettune.training.head import HeadObjective, LinearHead, fit_head, head_eval_metric, label_kind
from tickettune.training.outputs import RunOutputs, TrainResult, calibrate_run, scored_sets, write_run
from tickettune.training.trainer import say

RATE_SAMPLE = 256  # texts whose encoding time measures this machine's speed (they are encoded anyway)
SAVED_AGREEMENT = 0.9999  # the saved folder must reproduce the head's vectors to this cosine


class HeadEncoder:
    """A CachedEncoder's vectors through a LinearHead: what the saved model computes, without running it again.
    `encode` takes SentenceTransformer.encode's keyword arguments, as evaluate.judge passes them."""

    def __init__(self, encoder: CachedEncoder, head: LinearHead) -> None:
        self.encoder = encoder
        self.head = head

    def encode(self, texts, **kwargs) -> np.ndarray:
        return self.head.apply(self.encoder.encode(texts, **kwargs))


def measure_throughput(encoder: CachedEncoder, texts: list[str], train_vectors: int = 4096) -> Throughput:
    """Texts per second of the encoder on up to RATE_SAMPLE of `texts` not yet cached (they stay cached), and the
    head's seconds per ticket-epoch on random vectors of the encoder's width. Nothing to encode: an infinite rate."""
    missing = [t for t, v in zip(texts, encoder.cache.lookup(texts)) if v is None]
    rng = np.random.default_rng(0)
    sample = [missing[i] for i in rng.choice(len(missing), min(RATE_SAMPLE, len(missing)), replace=False)] \
        if missing else []
    rate = float("inf")
    if sample:
        start = time.perf_counter()
        encoder.encode(sample)
        rate = len(sample) / max(time.perf_counter() - start, 1e-9)
    dim = int(encoder.model.get_embedding_dimension())
    fake = rng.normal(size=(train_vectors, dim)).astype(np.float32)
    fake /= np.linalg.norm(fake, axis=1, keepdims=True)
    start = time.perf_counter()
    fit_head(fake, rng.integers(0, 8, train_vectors), HeadObjective(), epochs=1, batch_size=512)
    head = (time.perf_counter() - start) / train_vectors
    return Throughput(encode_per_second=rate, head_seconds_per_ticket_epoch=head)  # inf: everything was cached


def require_tickets(pairs: TrainingData) -> None:
    if "train" not in pairs.tickets:
        raise UserError(f"the head stage trains on tickets and their groups, and {pairs.source or 'the pairs'} has none; "
                        "build the pairs with `tickettune pairs` or train with --tickets FILE --group-by COLUMN")


def describe_rate(throughput: Throughput) -> str:
    rate = throughput.encode_per_second
    return "every vector cached: nothing to encode" if math.isinf(rate) else f"measured here: {rate:,.0f} texts/s encoding"


def plan_run(config: TrainConfig, pairs: TrainingData, encoder: CachedEncoder) -> tuple[Throughput, BudgetPlan]:
    """Steps 1-2: this machine's throughput, measured on texts the run must encode anyway, and the budget's plan."""
    require_tickets(pairs)
    train_texts = list(pairs.tickets["train"]["text"])
    # What the run encodes besides train tickets: the judged sets, and the eval tickets (or, without them, the eval
    # pairs) that score each epoch. The eval pairs' texts are drawn from the eval tickets.
    tickets = eval_tickets(pairs, config)
    evaluated = tickets["text"] if tickets is not None else [*pairs.eval["text1"], *pairs.eval["text2"]]
    held_out = sorted(set(pairs.test_sets().texts()) | set(evaluated))
    throughput = measure_throughput(encoder, held_out + train_texts)
    plan = plan_head_budget(budget_seconds=budget_seconds(config.budget_minutes), train_tickets=len(train_texts),
                            train_cached=sum(v is not None for v in encoder.cache.lookup(train_texts)),
                            held_out_uncached=sum(v is None for v in encoder.cache.lookup(held_out)),
                            throughput=throughput, epochs=config.head_epochs, cap=config.max_train_tickets)
    return throughput, plan


class EvalScore:
    """score(head) -> the eval value of `metric` through the head: retrieval over the eval tickets (RETRIEVAL_KEYS)
    or a pair metric over the eval pairs. Vectors of both are read once."""

    def __init__(self, encoder: CachedEncoder, pairs: TrainingData, config: TrainConfig, metric: str) -> None:
        self.metric = metric
        if self.metric in RETRIEVAL_KEYS:
            tickets = eval_tickets(pairs, config)
            if tickets is None:
                raise UserError(f"eval_metric {self.metric} searches the eval tickets, and there are none; build the "
                                "pairs with `tickettune pairs` or train with --tickets FILE --group-by COLUMN")
            self.groups = list(tickets["group"])
            self.queries = query_rows(self.groups, config.retrieval_queries, config.seed)
            if not len(self.queries):
                raise UserError(f"eval_metric {self.metric}: no eval ticket shares its group with another; use more "
                                "eval tickets or eval_metric=spearman")
            self.vectors = encoder.encode(list(tickets["text"]))
        else:
            self.pairs = pairs.eval.head(config.eval_subset) if config.eval_subset else pairs.eval
            texts = sorted(set(self.pairs["text1"]) | set(self.pairs["text2"]))
            self.texts, self.vectors = texts, encoder.encode(texts)
        self.folds, self.seed = config.threshold_cv_folds, config.seed

    def __call__(self, head: LinearHead) -> float:
        tuned = head.apply(self.vectors)
        if self.metric in RETRIEVAL_KEYS:
            return float(np.mean(corpus_metrics(tuned, self.groups, self.queries)[self.metric]))
        scores = pair_cosines(dict(zip(self.texts, tuned)), self.pairs)
        return float(compute_metrics(self.pairs["label"].to_numpy(float), scores, self.folds, self.seed)[self.metric])


def choose_scale(head: LinearHead, score: EvalScore, scales: list[float], best_value: float,
                 show: bool) -> tuple[LinearHead, dict | None]:
    """Scale the head's change towards the identity by each of `scales`; keep the best on eval (smaller on a tie)."""
    if scales == [1.0]:
        return head, None
    values = {s: (best_value if s == 1.0 else score(head.scaled(s))) for s in scales}
    chosen = max(values, key=lambda s: (values[s], -s))
    if show:
        say(f"update scale on eval {score.metric}: " + ", ".join(f"{s:g} -> {v:.4f}" for s, v in values.items())
            + f"; kept {chosen:g}")
    return head.scaled(chosen), {"chosen": chosen, "eval": {f"{s:g}": v for s, v in values.items()},
                                 "metric": score.metric}


def head_model(base, head: LinearHead):
    """One SentenceTransformer: the base encoder's modules (with a Normalize, so the head reads unit vectors as it
    was trained on), then the head's Dense and Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    modules = list(base)
    if not isinstance(modules[-1], Normalize):
        modules.append(Normalize())
    return SentenceTransformer(modules=modules + head.modules(), device=str(base.device))


def check_saved(folder: Path, expected: np.ndarray, texts: list[str]) -> None:
    """The saved folder, loaded by plain sentence-transformers, must give the head's vectors."""
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    got = loaded.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    agreement = float(np.min(np.sum(got * expected, axis=1)))
    if agreement < SAVED_AGREEMENT:
        raise RuntimeError(f"the saved head model disagrees with the trained head (cosine {agreement:.6f}); "
                           "nothing was written")


def _log(fit_log: list[dict], plan: BudgetPlan, metric: str, kind: str, seconds: float, encoder: CachedEncoder,
         rate: float, lr: float) -> dict:
    """The training log in the shape run.py's runs write (one 'step' per head epoch), plus what the budget bought."""
    scored = [e for e in fit_log if e["score"] is not None]
    best = max(scored, key=lambda e: (e["score"], -e["epoch"])) if scored else fit_log[-1]
    return {
        "phases": [{"name": "head", "start_step": 0, "end_step": plan.epochs, "epochs": plan.epochs,
                    "pairs": plan.train_tickets}],
        "total_steps": plan.epochs, "eval_metric": metric,
        "best": {"step": best["epoch"], "value": best["score"]}, "skipped_pairs": 0,
        "steps": [{"step": e["epoch"], "phase": "head", "loss": e["loss"], "learning_rate": lr}
                  for e in fit_log if e["loss"] is not None],
        "evals": [{"step": e["epoch"], "phase": "head" if e["epoch"] else "start", metric: e["score"]}
                  for e in scored],
        "train_seconds": round(seconds, 2), "pairs_per_second": round(plan.train_tickets * plan.epochs / max(seconds, 1e-9), 2),
        "restored": "best", "world_size": 1, "stopped_at_step": None,
        "stage": "head", "label_kind": kind,
        "budget": {"minutes": plan.budget_seconds / 60, "train_tickets": plan.train_tickets,
                   "available_tickets": plan.available, "epochs": plan.epochs,
                   "predicted_seconds": round(plan.predicted_seconds, 1), "notes": plan.notes,
                   "described": plan.describe()},
        "vectors": {"encoded": encoder.encoded, "from_cache": encoder.reused,
                    "encode_per_second": None if math.isinf(rate) else round(rate, 1)},
    }


def train_head(config: TrainConfig, pairs: TrainingData | str | Path, out: str | Path, *, overwrite: bool = False,
               allow_leakage: bool = False, show_progress: bool = True) -> TrainResult:
    """Train a linear head on the frozen encoder's vectors of the train tickets and write OUT (module docstring).

        >>> from tickettune.training.config import resolve_config
        >>> result = train_head(resolve_config("recommended"), "pairs/", "run/")        # doctest: +SKIP
        >>> result.log["budget"]["described"]                                           # doctest: +SKIP
        'budget 15 min: all 1,397 train tickets, 20 head epochs; predicted 0.9 min ...'
    """
    from tickettune.core.models import check_positions, load_model

    out = Path(out)
    check_output_dir(out, overwrite)
    pairs = pairs if isinstance(pairs, TrainingData) else load_pairs(pairs)
    if config.mask_pii:
        pairs = pairs.masked()
    require_tickets(pairs)
    if not allow_leakage:
        refuse_test_texts_in_training(pairs)
    started = time.perf_counter()
    base = load_model(config.model_name, config.max_seq_length)
    check_positions(base, config.max_seq_length, config.model_name)
    encoder = CachedEncoder.for_model(base, config.model_name, config.vector_cache)
    sets = pairs.test_sets()
    train_tickets = pairs.tickets["train"]
    throughput, plan = plan_run(config, pairs, encoder)
    show = show_progress
    if show:
        say(f"{plan.describe()} ({describe_rate(throughput)})")
    chosen = _prefer_cached(train_tickets, encoder, plan.train_tickets, config.seed)
    kind = label_kind(chosen["group"], config.label_kind)
    metric = head_eval_metric(config.head_eval_metric, kind)
    score = EvalScore(encoder, pairs, config, metric)
    vectors = encoder.encode(list(chosen["text"]), show_progress_bar=show)
    objective = HeadObjective(kind=kind, margin=config.head_margin, keep_weight=config.head_keep_weight,
                              temperature=config.head_temperature, feedback_margin=config.head_feedback_margin,
                              feedback_weight=config.head_feedback_weight)
    verdicts = pairs.feedback_train if pairs.feedback_train is not None and len(pairs.feedback_train) else None
    feedback = None if verdicts is None else (encoder.encode(list(verdicts["text1"])),
                                              encoder.encode(list(verdicts["text2"])),
                                              verdicts["label"].to_numpy(float))
    if show:
        say(f"training a linear head on {len(chosen):,} tickets' vectors ({kind} labels: "
            + ("pushing different groups apart, keeping same-group cosines" if kind == "coarse" else
               "pulling linked tickets together, keeping the rest") + f"), {plan.epochs} epochs"
            + ("" if verdicts is None else f", and {len(verdicts):,} agents' verdicts (rejected suggestions pushed "
               f"below cosine {config.head_feedback_margin:g}, confirmed ones pulled together)"))
    fit_started = time.perf_counter()
    head, fit_log = fit_head(vectors, list(chosen["group"]), objective, epochs=plan.epochs, lr=config.head_lr,
                             batch_size=config.head_batch_size, seed=config.seed, score=score,
                             on_epoch=(lambda e, loss, value: say(f"head epoch {e}: loss {loss:.4f}, eval "
                                                                  f"{metric} {fmt(value)}")) if show else None,
                             feedback=feedback)
    log = _log(fit_log, plan, metric, kind, time.perf_counter() - fit_started, encoder, throughput.encode_per_second,
               config.head_lr)
    if log["best"]["step"] == 0:
        log["update_scale"] = None
        if show:
            say(f"note: no head epoch beat the untuned encoder on eval {metric}, so the saved model equals "
                "it; the labels here did not teach the head anything the eval set rewards")
    else:
        head, log["update_scale"] = choose_scale(head, score, config.update_scales, log["best"]["value"], show)
    if show:
        say(f"scoring {scored_sets(sets)}")
    tuned = HeadEncoder(encoder, head)
    metrics, scores = judge(tuned, encoder, sets, queries=config.retrieval_queries,
                            folds=config.threshold_cv_folds, resamples=config.bootstrap_resamples, seed=config.seed)
    log["run_seconds"] = round(time.perf_counter() - started, 1)
    model = head_model(base, head)
    model.model_card_data.add_tags(["tickettune", "linear-head"])
    trained = pd.DataFrame({"text": chosen["text"].to_numpy(), "label": pd.factorize(chosen["group"].astype(str))[0],
                            "phase": "head"})
    check_texts = list(chosen["text"].head(8))

    def save(folder: Path) -> None:
        model.save(str(folder / "model"))
        check_saved(folder / "model", tuned.encode(check_texts), check_texts)
        # The verdicts' texts were trained on too (fingerprints read text, text1 and text2 alike).
        leakage.write_training_texts(folder / "model", trained if verdicts is None else
                                     pd.concat([trained, verdicts[["text1", "text2"]]], ignore_index=True))

    recipe = (f"linear head on frozen {Path(config.model_name).name} vectors ({kind} labels), lr {config.head_lr:g}, "
              f"{plan.epochs} epochs, batch {config.head_batch_size}")
    details = {"budget": plan.describe(),
               "vectors": f"{encoder.encoded:,} encoded, {encoder.reused:,} from the cache"}
    calibration = calibrate_run(tuned, config, pairs, show)
    return write_run(RunOutputs(config, pairs, sets, metrics, scores, log, recipe, trained, details,
                                calibration=calibration), save, out, overwrite)


def _prefer_cached(tickets: pd.DataFrame, encoder: CachedEncoder, count: int, seed: int) -> pd.DataFrame:
    """`count` train tickets: every cached one first (free), then a seeded sample of the rest; in file order."""
    if count >= len(tickets):
        return tickets
    cached = np.array([v is not None for v in encoder.cache.lookup(list(tickets["text"]))])
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(cached)), rng.permutation(np.flatnonzero(~cached))])
    return tickets.iloc[np.sort(order[:count])]


def estimate_head(config: TrainConfig, pairs: TrainingData) -> tuple[Throughput, BudgetPlan]:
    """What `estimate` reports for the head stage: the measured throughput and the budget's plan (the texts timed
    stay cached, so the run that follows does not encode them again)."""
    from tickettune.core.models import check_positions, load_model

    require_tickets(pairs)
    base = load_model(config.model_name, config.max_seq_length)
    check_positions(base, config.max_seq_length, config.model_name)
    return plan_run(config, pairs, CachedEncoder.for_model(base, config.model_name, config.vector_cache))
