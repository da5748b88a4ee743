"""Curriculum training with LoRA (or every weight) on sentence-transformers' trainer.

`train(config, pairs, out)` plans every phase's batches up front (schedule.py), hands them to
SentenceTransformerTrainer as one pass, evaluates on the eval pairs every `eval_steps` and at
each phase end, keeps the best weights, and writes OUT atomically:

    OUT/model/            the tuned model (LoRA adapter + sentence-transformers files, model card)
    OUT/model-merged/     with merge=True: the adapter folded into a standalone full model
    OUT/config.yaml       the resolved configuration
    OUT/training_log.json loss, learning rate and eval metrics per step, phase boundaries
    OUT/training_log.csv  the same per step, one row each
    OUT/metrics.json      tuned vs untuned model on the test pairs ({"model", "baseline", "change"})

Work happens in errors.partial_dir(OUT) (checkpoints included) and moves into place at the end,
so `resume=True` can continue a killed run from its last checkpoint. Under torchrun every
process trains (data parallel) and only rank 0 writes.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import transformers
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.evaluation import BaseEvaluator
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback

from .config import GROUP_LOSSES, PHASES, TrainConfig, dump_config
from .errors import UserError, atomic_output_dir, check_output_dir, partial_dir
from . import leakage
from .checkpoints import CHECKPOINTS, RUN_FILE, prepare_workdir, run_fingerprint
from .evaluate import TestSets, compute_metrics, judge, retrieval_scores
from .jsonio import write_json
from .groups import HARD_SHARE, GroupPool, plan_group_batches
from .losses import IN_BATCH_NEGATIVES, ONE_PER_GROUP, build_loss, loss_columns
from .pairs_io import pair_file, read_pair_dir_extras, read_pairs
from .report import fmt, markdown_tables, training_report, write_report
from .retrieval import RETRIEVAL_KEYS, query_rows
from .similarity import SIMILAR, pair_scores
from .schedule import Plan, PlannedBatchSampler, lr_lambda, plan_batches

PHASE_MODES = ("keep", "single", "difficulty")
SINGLE_PHASE = "all"
EVAL_KEYS = ("spearman", "pearson", "roc_auc", "average_precision", "f1_cv")
# LoRA targets by architecture (config.model_type); anything else is treated as BERT-style.
LORA_TARGETS = {
    "mpnet": ["attn.q", "attn.k", "attn.v", "attn.o", "intermediate.dense", "output.dense"],
    "bert": ["query", "key", "value", "dense"],
}


@dataclass
class TrainingPairs:
    """Train pairs (with a `phase` column once phases are assigned), eval pairs and test pairs, and where they came from.

    A directory made by `tickettune pairs` also gives the representative test pairs and each split's tickets
    (text, group): train tickets for the group losses, eval tickets for retrieval during training, test
    tickets for retrieval at the end. `test_name` says what the test pairs are ("hard" from `pairs`).
    """

    train: pd.DataFrame
    eval: pd.DataFrame
    test: pd.DataFrame
    source: str = ""
    test_name: str = "test"
    representative: pd.DataFrame | None = None
    tickets: dict[str, pd.DataFrame] = field(default_factory=dict)

    def test_sets(self) -> TestSets:
        pairs = {self.test_name: self.test}
        if self.representative is not None:
            pairs["representative"] = self.representative
        return TestSets(self.tickets.get("test"), pairs)

    def masked(self) -> "TrainingPairs":
        """A copy with personal data masked in every text (pii.mask_pii)."""
        from .pii import mask_pair_texts

        return replace(self, train=mask_pair_texts(self.train), eval=mask_pair_texts(self.eval),
                       test=mask_pair_texts(self.test),
                       representative=None if self.representative is None else mask_pair_texts(self.representative),
                       tickets={k: mask_pair_texts(v) for k, v in self.tickets.items()})


@dataclass
class TrainResult:
    """What `train` returns: where it wrote, the test comparison, and the training log."""

    out: Path
    metrics: dict[str, Any]
    log: dict[str, Any]
    config: TrainConfig
    files: list[str] = field(default_factory=list)
    # The tuned model's cosine per pair of each test pair set, and its metrics per retrieval query, for comparing
    # runs pair by pair and query by query.
    test_scores: dict[str, Any] = field(default_factory=dict)


def load_pairs(pairs_dir: str | Path | None = None, train_file: str | Path | None = None,
               eval_file: str | Path | None = None, test_file: str | Path | None = None) -> TrainingPairs:
    """A directory made by `tickettune pairs`, or three pair files in any format pairs_io reads."""
    files = (train_file, eval_file, test_file)
    if pairs_dir is not None and any(f is not None for f in files):
        raise UserError("pass either --pairs DIR or --train/--eval/--test files, not both")
    if pairs_dir is not None:
        if not Path(pairs_dir).is_dir():
            raise UserError(f"{pairs_dir} is not a directory; pass the folder `tickettune pairs` wrote, or --train/--eval/--test")
        files = tuple(pair_file(pairs_dir, role) for role in ("train", "eval", "test"))
    missing = [flag for flag, f in zip(("--train", "--eval", "--test"), files) if f is None]
    if len(missing) == 3:
        raise UserError("no training pairs given; pass --pairs DIR or --train FILE --eval FILE --test FILE")
    if missing:
        raise UserError(f"missing {', '.join(missing)}: training needs train, eval and test pairs (or --pairs DIR)")
    pairs = TrainingPairs(*(read_pairs(f) for f in files), source=str(pairs_dir or files[0]))
    if pairs_dir is None:
        return pairs
    folder = Path(pairs_dir)
    representative, tickets, test_name = read_pair_dir_extras(folder)
    return replace(pairs, representative=representative, tickets=tickets, test_name=test_name)


def pairs_from_tickets(path: str | Path, group_by: str | None, text_columns: list[str] | None,
                       config: TrainConfig):
    """`train --tickets`: the split, held-out tickets and test pairs `tickettune pairs` would make (its defaults,
    config.seed), as TrainingPairs and the PairSet to write beside the run. Group losses need no model-scored
    curriculum pairs, so their pairs' difficulty is lexical (TF-IDF) and no model is loaded for it."""
    from .pairs import PairOptions, build_pairs
    from .tickets import read_tickets

    frame = read_tickets(path, text_columns, group_by, mask_pii=config.mask_pii)
    options = PairOptions(seed=config.seed, model=config.model_name,
                          difficulty="tfidf" if config.loss in GROUP_LOSSES else "model")
    pairset = build_pairs(frame, options)
    return from_pairset(pairset, str(path)), pairset


def from_pairset(pairset, source: str) -> TrainingPairs:
    """TrainingPairs from a `pairs.PairSet` made in memory: its test pairs are the hard ones."""
    return TrainingPairs(pairset.train, pairset.eval, pairset.test, source, "hard", pairset.representative,
                         pairset.tickets)


def difficulty_phases(pairs: pd.DataFrame, model, seed: int) -> np.ndarray:
    """easy/medium/hard as `tickettune pairs` assigns them: terciles of the base model's difficulty within each label."""
    from .pairs import difficulty_terciles, pair_difficulty

    labels = pairs["label"].to_numpy(float)
    return difficulty_terciles(labels, pair_difficulty(labels, pair_scores(model, pairs)), np.random.default_rng(seed))


def assign_phases(pairs: pd.DataFrame, mode: str, model=None, seed: int = 0) -> pd.DataFrame:
    """Keep the file's phases (`keep`; one phase when it has none), use one phase, or split by difficulty."""
    if mode not in PHASE_MODES:
        raise UserError(f"--phases {mode!r} is not one of {', '.join(PHASE_MODES)}")
    pairs = pairs.copy()
    if mode == "difficulty":
        pairs["phase"] = difficulty_phases(pairs, model, seed)
    elif mode == "single" or "phase" not in pairs:
        pairs["phase"] = SINGLE_PHASE
    return pairs


def phase_epochs(pairs: pd.DataFrame, config: TrainConfig) -> dict[str, float]:
    """Epochs of each phase present, in curriculum order; phase_epochs gives one number per phase."""
    present = set(pairs["phase"])
    if present == {SINGLE_PHASE}:
        return {SINGLE_PHASE: config.phase_epochs[0]}
    epochs = config.phase_epochs
    if len(epochs) > len(PHASES):
        raise UserError(f"phase_epochs lists {len(epochs)} numbers but there are {len(PHASES)} phases "
                        f"({', '.join(PHASES)}); give one number per phase")
    out = {}
    for index, name in enumerate(PHASES):
        if name in present and index >= len(epochs):
            raise UserError(f"the train pairs have phase '{name}' but phase_epochs lists only {len(epochs)} "
                            f"number(s); give one per phase, e.g. --set phase_epochs=[2,2,2]")
        if index < len(epochs) and epochs[index] > 0:
            if name not in present:
                raise UserError(f"phase '{name}' has no training pairs but phase_epochs gives it {epochs[index]:g} "
                                f"epochs; rebuild the pairs or set its epochs to 0 (e.g. --set phase_epochs=...)")
            out[name] = epochs[index]
    return out


def check_leakage(pairs: TrainingPairs, action: str = "train") -> None:
    """Refuse test texts (pairs and tickets) that also occur in the training pairs or tickets (compared case- and
    space-insensitively)."""
    training = leakage.fingerprints(pairs.train) | leakage.fingerprints(pairs.tickets.get("train", pd.DataFrame()))
    test_sets = pairs.test_sets()
    tested = pd.concat(list(test_sets.pairs.values()) + ([] if test_sets.tickets is None else [test_sets.tickets]))
    leakage.check_leakage(training, tested, action)


def lora_targets(model) -> list[str]:
    """The modules LoRA adapts for this architecture (config.model_type)."""
    model_type = getattr(model.transformers_model.config, "model_type", "")
    return LORA_TARGETS.get(model_type, LORA_TARGETS["bert"])


def add_lora(model, config: TrainConfig) -> tuple[int, int]:
    """Add a LoRA adapter (peft) to the transformer; returns (trainable, total) parameter counts."""
    from peft import LoraConfig

    targets = config.lora_target_modules or lora_targets(model)
    names = [n for n, _ in model.transformers_model.named_modules()]
    # The pooler is unused by mean pooling; adapting it would only add dead parameters (and stall DDP).
    exclude = ["pooler.dense"] if any(n.endswith("pooler.dense") for n in names) else None
    if not any(n == t or n.endswith(f".{t}") for t in targets for n in names):
        raise UserError(f"lora_target_modules {targets} match no module of {config.model_name}; "
                        f"name some of its modules (e.g. {', '.join(n.rsplit('.', 1)[-1] for n in names[-3:])})")
    model.add_adapter(LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=targets, exclude_modules=exclude))
    return _parameter_counts(model)


def _parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def precision_flags(choice: str) -> dict[str, bool]:
    """Trainer bf16/fp16 flags: auto picks bf16 (or fp16) on a CUDA GPU, full precision on CPU."""
    cuda = torch.cuda.is_available()
    if choice == "auto":
        choice = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    if choice == "fp16" and not cuda:
        raise UserError("mixed_precision fp16 needs a CUDA GPU; use --set mixed_precision=auto (or bf16) on CPU")
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


def report_targets(report_to: str) -> list[str]:
    """Trainer `report_to`; a tracker that is not installed is a user error, not a traceback."""
    if report_to == "none":
        return []
    modules = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}[report_to]
    if not any(importlib.util.find_spec(m) for m in modules):
        raise UserError(f"report_to {report_to} needs the {modules[0]} package; pip install {modules[0]} or set report_to=none")
    return [report_to]


class PairEvaluator(BaseEvaluator):
    """Scores eval pairs by cosine (each distinct text encoded once) with evaluate.compute_metrics, and, given eval
    tickets, searches them (retrieval.py): each query ticket against all of them.

    Called by the trainer with the model; returns the EVAL_KEYS metrics, and RETRIEVAL_KEYS with tickets (the
    trainer prefixes them with "eval_"); `primary_metric` names the one that picks the best weights.
    """

    def __init__(self, pairs: pd.DataFrame, metric: str, folds: int, seed: int, tickets: pd.DataFrame | None = None,
                 queries: int | None = None) -> None:
        super().__init__()
        self.pairs = pairs.reset_index(drop=True)
        self.labels = self.pairs["label"].to_numpy(float)
        self.tickets = None if tickets is None else tickets.reset_index(drop=True)
        self.queries = None if tickets is None else query_rows(self.tickets["group"], queries, seed)
        self.primary_metric = metric
        self.folds = folds
        self.seed = seed
        self.seconds = 0.0

    def __call__(self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        start = time.perf_counter()
        metrics = compute_metrics(self.labels, pair_scores(model, self.pairs), self.folds, self.seed)
        found = {key: float(metrics[key]) for key in EVAL_KEYS}
        if self.tickets is not None and len(self.queries):
            per_query = retrieval_scores(model, self.tickets, self.queries)
            found.update({key: float(np.mean(per_query[key])) for key in RETRIEVAL_KEYS})
        self.seconds += time.perf_counter() - start
        return found

    def check(self) -> None:
        """Refuse an eval set on which the chosen metric is undefined (one class, or one label value)."""
        y = self.labels >= SIMILAR
        if self.primary_metric in RETRIEVAL_KEYS:
            if self.tickets is None:
                raise UserError(f"eval_metric {self.primary_metric} searches the eval tickets, and there are none; build "
                                "the pairs with `tickettune pairs` (it writes eval_tickets.jsonl) or choose eval_metric="
                                "spearman")
            if not len(self.queries):
                raise UserError(f"eval_metric {self.primary_metric}: no eval ticket shares its group with another, so "
                                "there is nothing to find; use more eval tickets or eval_metric=spearman")
            return
        if self.primary_metric == "spearman" and np.ptp(self.labels) == 0:
            raise UserError("the eval pairs all have the same label, so Spearman is undefined; use eval pairs with varied labels")
        if self.primary_metric != "spearman" and (y.all() or not y.any()):
            raise UserError(f"the eval pairs are all {'similar' if y.all() else 'dissimilar'}, so "
                            f"{self.primary_metric} is undefined; use eval pairs of both kinds or eval_metric=spearman")


class BestModel:
    """The best weights seen at an evaluation, kept in memory and copied into each checkpoint.

    Only trainable parameters are kept (the LoRA adapter, or every weight without LoRA).
    """

    FILE = "best_model.safetensors"

    def __init__(self) -> None:
        self.value: float | None = None
        self.step: int | None = None
        self.weights: dict[str, Any] | None = None

    def offer(self, value: float, step: int, model) -> bool:
        if value is None or math.isnan(value) or (self.value is not None and value <= self.value):
            return False
        self.value, self.step = float(value), int(step)
        self.weights = {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}
        return True

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        if self.weights is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.weights, str(folder / self.FILE), metadata={"value": repr(self.value), "step": str(self.step)})

    def load(self, folder: Path) -> None:
        from safetensors import safe_open

        path = folder / self.FILE
        if not path.is_file():
            return
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            self.weights = {k: handle.get_tensor(k) for k in handle.keys()}
        self.value, self.step = float(meta["value"]), int(meta["step"])

    def restore(self, model) -> None:
        if self.weights is None:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.weights.items():
                params[name].copy_(value.to(params[name].device))


class UpdateScaler:
    """Scales what training learned: weights = untuned + s x (trained - untuned), WiSE-FT style.

    With LoRA the update is (alpha / r) B A, so scaling B scales it exactly; a full fine-tune interpolates
    every weight between its untuned copy (kept from the start) and the trained one. Scale 0 is the untuned
    model, 1 the trained one; in between keeps some of the untuned model's general similarity.
    """

    def __init__(self, model, lora: bool) -> None:
        # A LoRA update starts from B = 0; only a full fine-tune needs the untuned weights kept.
        self.untuned = {} if lora else {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
        self.trained: dict[str, torch.Tensor] = {}

    def _targets(self, model):
        lora = [(n, p) for n, p in model.named_parameters() if "lora_B" in n]
        return lora or [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def capture(self, model) -> None:
        self.trained = {n: p.detach().to("cpu", copy=True) for n, p in self._targets(model)}

    def apply(self, model, scale: float) -> None:
        with torch.no_grad():
            for name, param in self._targets(model):
                trained = self.trained[name]
                start = torch.zeros_like(trained) if "lora_B" in name else self.untuned[name]
                param.copy_((start + scale * (trained - start)).to(param.device))


def choose_update_scale(model, scaler: UpdateScaler, config: TrainConfig, evaluator: PairEvaluator,
                        log: dict[str, Any], show: bool) -> dict[str, Any] | None:
    """Try each of config.update_scales on the eval set and keep the best by eval_metric (the smaller scale on a
    tie: it keeps more of the untuned model). Returns the scores per scale and the choice, or None when there is
    nothing to choose (one scale, or the untuned weights were kept)."""
    if config.update_scales == [1.0] or log["best"]["step"] in (0, None):
        return None
    scaler.capture(model)
    known = {1.0: log["best"]["value"]}
    start = next((e for e in log["evals"] if e["step"] == 0), None)
    if start is not None and start.get(config.eval_metric) is not None:
        known[0.0] = start[config.eval_metric]
    values = {}
    for scale in config.update_scales:
        if scale not in known:
            scaler.apply(model, scale)
            known[scale] = evaluator(model)[config.eval_metric]
        values[scale] = float(known[scale])
    chosen = max(values, key=lambda s: (values[s], -s))
    scaler.apply(model, chosen)
    if show:
        _say(f"update scale (WiSE-FT) on eval {config.eval_metric}: "
             + ", ".join(f"{s:g} -> {v:.4f}" for s, v in values.items()) + f"; kept {chosen:g}")
    return {"chosen": chosen, "eval": {f"{s:g}": v for s, v in values.items()}, "metric": config.eval_metric}


def guide_model(config: TrainConfig):
    """group_gist's guide: the untuned model, which decides which in-batch negatives are too close to count."""
    if config.loss != "group_gist":
        return None
    from .models import load_model

    return load_model(config.model_name, config.max_seq_length)


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class CurriculumTrainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer with the plan's LambdaLR schedule and best weights in each checkpoint."""

    def __init__(self, *args, lr_function, best: BestModel, **kwargs) -> None:
        self.lr_function = lr_function
        self.best = best
        super().__init__(*args, **kwargs)

    def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
        # The library's card callback copies training pairs and sentences into model/README.md (its "Samples"
        # and widget); ticket texts must not travel with a deployed model. card_section writes our own card.
        pass

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.lr_function)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save_checkpoint(self, model, trial) -> None:
        # Written before the trainer state, so a checkpoint with trainer_state.json always has it.
        if self.args.should_save:
            self.best.save(Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}")
        super()._save_checkpoint(model, trial)


class PhaseCallback(TrainerCallback):
    """Evaluates at each phase end, tracks the best weights, shows a bar per phase and a summary line."""

    def __init__(self, plan: Plan, best: BestModel, metric: str, show: bool) -> None:
        self.plan, self.best, self.metric, self.show = plan, best, metric, show
        self.bar = None
        self.phase_started = time.perf_counter()
        self.last_eval = math.nan
        self.last_loss = math.nan

    def _open(self, step: int) -> None:
        if not self.show or step >= self.plan.total_steps:
            return
        phase = self.plan.phase_at(step)
        self.bar = tqdm(total=phase.steps, initial=step - phase.start_step, desc=f"phase {phase.name}",
                        unit="step", file=sys.stderr, dynamic_ncols=True, leave=False)
        self.phase_started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.show = self.show and state.is_world_process_zero
        self._open(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.plan.phase_at(state.global_step - 1).end_step:
            control.should_evaluate = True
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = logs["loss"]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.last_loss:.4f}", **{self.metric: f"{self.last_eval:.4f}"})

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        step = state.global_step
        self.last_eval = (metrics or {}).get(f"eval_{self.metric}", math.nan)
        self.best.offer(self.last_eval, step, model)
        if step == 0 or step != self.plan.phase_at(step - 1).end_step:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.show:
            _say(self._summary(self.plan.phase_at(step - 1), state))
        self._open(step)

    def _summary(self, phase, state) -> str:
        losses = [e["loss"] for e in state.log_history if "loss" in e and phase.start_step < e["step"] <= phase.end_step]
        seconds = time.perf_counter() - self.phase_started
        return (f"phase {phase.name}: steps {phase.start_step + 1}-{phase.end_step}, {phase.pairs} pairs "
                f"({phase.epochs:g} epochs), mean loss {np.mean(losses) if losses else math.nan:.4f}, "
                f"eval {self.metric} {fmt(self.last_eval)} (best {fmt(self.best.value)} at step {self.best.step}), "
                f"{seconds:.0f} s")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class StopCallback(TrainerCallback):
    """Hands each evaluation after a training step to `on_evaluate(step, metrics)`; True stops training there.

    `metrics` holds the EVAL_KEYS (and RETRIEVAL_KEYS with eval tickets) without the trainer's "eval_" prefix. The function runs on rank 0
    only and its answer is broadcast, so every process of a torchrun job stops at the same step.
    """

    def __init__(self, on_evaluate: Callable[[int, dict[str, float]], bool]) -> None:
        self.hook = on_evaluate
        self.stopped_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step == 0:  # the untuned model (eval_on_start): nothing has trained yet
            return
        stop = False
        if state.is_world_process_zero:
            found = {key: metrics[f"eval_{key}"] for key in EVAL_KEYS + RETRIEVAL_KEYS if f"eval_{key}" in (metrics or {})}
            stop = bool(self.hook(state.global_step, found))
        if args.world_size > 1:
            decision = [stop]
            torch.distributed.broadcast_object_list(decision, src=0)
            stop = decision[0]
        if stop:
            control.should_training_stop = True
            self.stopped_at = state.global_step


def training_log(history: list[dict[str, Any]], plan: Plan, best: BestModel, metric: str) -> dict[str, Any]:
    """Loss, learning rate and eval metrics per step, from the trainer's log history, with the phase plan."""
    def phase_of(step: int) -> str:  # optimizer step s (1-based in the log) is plan step s - 1
        return plan.phase_at(max(step - 1, 0)).name

    steps, evals = [], []
    for entry in history:
        if "loss" in entry:
            row = {"step": entry["step"], "phase": phase_of(entry["step"]), "loss": entry["loss"],
                   "learning_rate": entry.get("learning_rate"), "grad_norm": entry.get("grad_norm")}
            row.update({k: entry[k] for k in ("pair", "mnrl") if k in entry})
            steps.append(row)
        elif f"eval_{metric}" in entry:
            evals.append({"step": entry["step"], "phase": phase_of(entry["step"]) if entry["step"] else "start",
                          **{k: entry[f"eval_{k}"] for k in EVAL_KEYS + RETRIEVAL_KEYS if f"eval_{k}" in entry}})
    return {
        "phases": [{"name": p.name, "start_step": p.start_step, "end_step": p.end_step, "epochs": p.epochs,
                    "pairs": p.pairs} for p in plan.phases],
        "total_steps": plan.total_steps,
        "eval_metric": metric,
        "best": {"step": best.step, "value": best.value},
        "skipped_pairs": plan.dropped,
        "steps": steps,
        "evals": evals,
    }


def write_training_log(log: dict[str, Any], folder: Path) -> None:
    write_json(folder / "training_log.json", log)
    frame = pd.DataFrame(log["steps"])
    if log["evals"]:
        evals = pd.DataFrame(log["evals"])[["step", log["eval_metric"]]].rename(
            columns={log["eval_metric"]: f"eval_{log['eval_metric']}"})
        frame = frame.merge(evals, on="step", how="outer").sort_values("step")
    frame.to_csv(folder / "training_log.csv", index=False)


def card_section(config: TrainConfig, log: dict[str, Any], metrics: dict[str, Any], source: str = "") -> str:
    """The tickettune part of the model card: recipe, curriculum phases, best eval step and test results."""
    method = (f"LoRA r={config.lora_r}, alpha={config.lora_alpha:g}, dropout={config.lora_dropout:g}"
              if config.use_lora else "full fine-tuning (every weight)")
    schedule = "restarting each phase" if config.schedule_per_phase else "one over all phases"
    best = log["best"]
    lines = ["", "## Training with tickettune", "", f"- **Base model:** `{config.model_name}`", f"- **Method:** {method}"]
    lines += [f"- **Pairs:** `{source}`"] if source else []
    lines += [f"- **Loss:** {config.loss}; lr {config.lr:g}, batch {config.batch_size}, {config.scheduler} schedule "
              f"({schedule}), max_seq_length {config.max_seq_length}, seed {config.seed}",
              f"- **Restored weights:** {log['restored']} (eval {config.eval_metric} {fmt(best['value'])} at step "
              f"{best['step']})", "", "| Phase | Steps | Epochs | Pairs |", "|---|---|---:|---:|"]
    lines += [f"| {p['name']} | {p['start_step'] + 1}-{p['end_step']} | {p['epochs']:g} | {p['pairs']} |"
              for p in log["phases"]]
    lines += ["", "### Tuned vs untuned on held-out data", "", markdown_tables(metrics, level="####"), ""]
    return "\n".join(lines)


def training_dataset(frame: pd.DataFrame, columns: list[str]):
    """The rows a loss trains on as a datasets.Dataset of its columns, in order (labels as float32)."""
    from datasets import Dataset

    data = {c: frame[c].astype("float32" if c == "label" else str).tolist() for c in columns}
    return Dataset.from_dict(data)


def row_lengths(model, frame: pd.DataFrame, columns: list[str], limit: int) -> np.ndarray:
    """Token count of each row's longest text (capped at max_seq_length), each distinct text tokenized once."""
    texts = [c for c in columns if c != "label"]
    unique = sorted(set().union(*(frame[c] for c in texts)))
    counts = dict(zip(unique, map(len, model.tokenizer(unique, truncation=True, max_length=limit)["input_ids"])))
    return np.array([max(counts[t] for t in row) for row in frame[texts].itertuples(index=False)])


def plan_rows(frame: pd.DataFrame, columns: list[str], epochs: dict[str, float], config: TrainConfig, model,
              world_size: int) -> Plan:
    """The batches of pair rows for every phase (schedule.plan_batches), length-grouped when configured."""
    rows = {name: np.flatnonzero(frame["phase"].to_numpy() == name) for name in epochs}
    texts = None
    if config.loss in IN_BATCH_NEGATIVES:
        text_columns = [c for c in columns if c != "label"]
        texts = [tuple(row) for row in frame[text_columns].itertuples(index=False)]
    lengths = row_lengths(model, frame, columns, config.max_seq_length) if config.length_grouped_batches else None
    return plan_batches(rows, epochs, config.batch_size, config.seed, config.curriculum, world_size,
                        config.gradient_accumulation_steps, lengths, texts)


def _announcement(config: TrainConfig, plan: Plan, trainable: int, total: int, checkpoint: Path | None) -> str:
    """The line printed before training: what trains, how many parameters, how many steps per phase."""
    return (f"training {config.model_name} ({'LoRA' if config.use_lora else 'full'}): {trainable:,} of {total:,} "
            f"parameters trainable ({100 * trainable / total:.2f}%); {config.loss} loss, {plan.total_steps} steps over "
            f"{', '.join(f'{p.name} {p.steps}' for p in plan.phases)}"
            + (f"; {plan.world_size} processes" if plan.world_size > 1 else "")
            + (f"; {plan.dropped} pairs skipped (their texts already filled the batches)" if plan.dropped else "")
            + (f"; resuming from {checkpoint.name}" if checkpoint else ""))


def training_arguments(config: TrainConfig, plan: Plan, work: Path, eval_on_start: bool):
    """The trainer's arguments for a planned run: the plan's batches, checkpoints under work/, no own schedule."""
    saving = {"save_strategy": "steps", "save_steps": config.save_steps} if config.save_steps else {"save_strategy": "no"}
    return SentenceTransformerTrainingArguments(
        output_dir=str(work / CHECKPOINTS),
        num_train_epochs=1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.lr,
        # The LambdaLR of schedule.py does the scheduling; these two only describe it in the model card.
        lr_scheduler_type={"warmup_cosine": "cosine"}.get(config.scheduler, config.scheduler),
        warmup_steps=config.warmup_ratio if config.warmup_ratio is not None else config.warmup_steps,
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=PlannedBatchSampler(plan.batches),
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps,
        # The untuned model's eval score is the bar to beat and the log's start; not again on resume.
        eval_on_start=eval_on_start,
        save_total_limit=2,
        logging_steps=1,
        disable_tqdm=True,
        report_to=report_targets(config.report_to),
        dataloader_drop_last=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        # accelerate only runs torchrun processes as multi-CPU (gloo) when told it is on CPU.
        use_cpu=not torch.cuda.is_available(),
        **saving,
        **precision_flags(config.mixed_precision),
    )


@dataclass
class PreparedRun:
    """What `train` and `estimate` both need before LoRA is added: the untuned model, the phased train pairs, the
    evaluator, and the planned batches over the rows (`frame`, its loss `columns`) the loss trains on."""

    model: Any
    train_pairs: pd.DataFrame
    evaluator: PairEvaluator
    frame: pd.DataFrame
    columns: list[str]
    plan: Plan


def _eval_tickets(pairs: TrainingPairs, config: TrainConfig) -> pd.DataFrame | None:
    tickets = pairs.tickets.get("eval")
    if tickets is None or config.eval_tickets is None or config.eval_tickets >= len(tickets):
        return tickets
    rows = np.random.default_rng(config.seed).choice(len(tickets), config.eval_tickets, replace=False)
    return tickets.iloc[np.sort(rows)]


def _group_rows(config: TrainConfig, pairs: TrainingPairs, model, world_size: int) -> tuple[pd.DataFrame, list[str], Plan]:
    """Group losses: the planned batches of train tickets (groups.py) as rows in batch order."""
    if "train" not in pairs.tickets:
        raise UserError(f"loss {config.loss} trains on tickets and their groups, and {pairs.source or 'the pairs'} has "
                        "none; build the pairs with `tickettune pairs` (it writes train_tickets.jsonl) or train with "
                        "--tickets FILE --group-by COLUMN")
    epochs = dict(zip(PHASES, config.phase_epochs))
    if len(config.phase_epochs) > len(PHASES):
        raise UserError(f"phase_epochs lists {len(config.phase_epochs)} numbers; group training has {len(PHASES)} phases "
                        f"({', '.join(PHASES)}): random batches, then mixed, then batches of confusable tickets")
    pool = GroupPool.from_tickets(pairs.tickets["train"], config.max_train_tickets, config.seed)
    hard = any(HARD_SHARE[name] > 0 and e > 0 for name, e in epochs.items())
    if hard:  # the untuned model's view of the pool, to draw confusable tickets together
        pool.vectors = model.encode(list(pool.text), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    one_per_group = config.loss in ONE_PER_GROUP
    frame, plan = plan_group_batches(pool, epochs, config.batch_size, config.groups_per_batch, one_per_group,
                                     config.seed, config.curriculum, world_size, config.gradient_accumulation_steps)
    return frame, (["anchor", "positive"] if one_per_group else ["text", "label"]), plan


def prepare_run(config: TrainConfig, pairs: TrainingPairs, phases: str, world_size: int = 1) -> PreparedRun:
    """What `train` and `estimate` both need (see PreparedRun), from the untuned model."""
    from .models import load_model

    model = load_model(config.model_name, config.max_seq_length)
    positions = getattr(model.transformers_model.config, "max_position_embeddings", None)
    if positions is not None and config.max_seq_length > positions:
        raise UserError(f"max_seq_length {config.max_seq_length} exceeds the {positions} positions of {config.model_name}; "
                        f"set --set max_seq_length={positions} or lower")
    evaluator = PairEvaluator(pairs.eval.head(config.eval_subset) if config.eval_subset else pairs.eval,
                              config.eval_metric, config.threshold_cv_folds, config.seed, _eval_tickets(pairs, config),
                              config.retrieval_queries)
    evaluator.check()
    if config.loss in GROUP_LOSSES:
        frame, columns, plan = _group_rows(config, pairs, model, world_size)
        return PreparedRun(model, pairs.train, evaluator, frame, columns, plan)
    train_pairs = assign_phases(pairs.train, phases, model, config.seed)
    epochs = phase_epochs(train_pairs, config)
    frame, columns = loss_columns(train_pairs, config)
    return PreparedRun(model, train_pairs, evaluator, frame, columns,
                       plan_rows(frame, columns, epochs, config, model, world_size))


def train(config: TrainConfig, pairs: TrainingPairs | str | Path, out: str | Path, overwrite: bool = False,
          resume: bool = False, merge: bool = False, allow_leakage: bool = False, phases: str = "keep",
          show_progress: bool = True,
          on_evaluate: Callable[[int, dict[str, float]], bool] | None = None) -> TrainResult:
    """Train config.model_name on the pairs' curriculum phases and write OUT (see the module docstring).

    pairs: TrainingPairs, or a directory made by `tickettune pairs`.
    phases: keep the train pairs' phases (one phase when they have none), `single`, or `difficulty`
    (easy/medium/hard as `tickettune pairs` assigns them: terciles of the base model's difficulty per label).
    resume: continue the interrupted run of the same OUT from its last checkpoint.
    merge: also write OUT/model-merged, the adapter folded into a standalone full model.
    on_evaluate: called as on_evaluate(step, eval_metrics) after each evaluation of a trained step (rank 0);
    returning True stops training there (e.g. to prune a hyper-parameter trial). The log records the
    step as `stopped_at_step`; outputs are written as for a complete run.
    """
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    out = Path(out)
    check_output_dir(out, overwrite)
    pairs = pairs if isinstance(pairs, TrainingPairs) else load_pairs(pairs)
    if config.mask_pii:  # before anything reads, stores or shows a text
        pairs = pairs.masked()
    if merge and not config.use_lora:
        raise UserError("--merge folds a LoRA adapter into the model, but use_lora is false (the model is already full)")
    if not allow_leakage:
        check_leakage(pairs)
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    show = show_progress and rank == 0

    run = prepare_run(config, pairs, phases, world_size)
    model, evaluator, frame, columns, plan = run.model, run.evaluator, run.frame, run.columns, run.plan
    work = partial_dir(out)
    fingerprint = run_fingerprint(config, frame, world_size)
    checkpoint = prepare_workdir(work, fingerprint, resume, overwrite)

    transformers.set_seed(config.seed)  # LoRA's initial weights
    untuned = UpdateScaler(model, config.use_lora)
    if config.use_lora:
        trainable, total = add_lora(model, config)
    else:
        trainable, total = _parameter_counts(model)
    if show:
        _say(_announcement(config, plan, trainable, total, checkpoint))

    # Creating the arguments joins the torchrun process group, so every process has checked the
    # run folder above before rank 0 changes it here.
    args = training_arguments(config, plan, work, eval_on_start=checkpoint is None)
    with args.main_process_first(desc="prepare the run folder", local=False):
        if rank == 0:
            if checkpoint is None and work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True, exist_ok=True)
            write_json(work / RUN_FILE, fingerprint)

    best = BestModel()
    if checkpoint is not None:
        best.load(checkpoint)
    stopper = StopCallback(on_evaluate) if on_evaluate is not None else None
    trainer = CurriculumTrainer(
        model=model, args=args, train_dataset=training_dataset(frame, columns), loss=build_loss(config, model, guide_model(config)),
        evaluator=evaluator, lr_function=lr_lambda(plan, config.scheduler, config.warmup_steps, config.warmup_ratio,
                                                   config.schedule_per_phase),
        best=best, callbacks=[PhaseCallback(plan, best, config.eval_metric, show)] + ([stopper] if stopper else []))
    trainer.remove_callback(PrinterCallback)
    for callback in trainer.callback_handler.callbacks:
        # TensorBoard would log under the checkpoints (deleted at the end); keep its events in OUT/runs
        # unless TENSORBOARD_LOGGING_DIR says otherwise.
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(work / "runs")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started - evaluator.seconds
    if config.save_best_model:
        best.restore(model)
    log = training_log(trainer.state.log_history, plan, best, config.eval_metric)
    first_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
    log.update(train_seconds=round(seconds, 2), pairs_per_second=round(plan.pairs_from(first_step) / max(seconds, 1e-9), 2),
               restored="best" if config.save_best_model else "last", world_size=world_size,
               stopped_at_step=stopper.stopped_at if stopper else None,
               update_scale=choose_update_scale(model, untuned, config, evaluator, log, show))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Leave the process group together: a rank that exits while others still hold it aborts
        # in gloo's threads ("terminate called without an active exception").
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank != 0:
        return TrainResult(out, {}, log, config)
    # The report's per-phase statistics need the phases training used, also when they were assigned here.
    trained = frame if config.loss in GROUP_LOSSES else run.train_pairs
    return _write_outputs(model, config, replace(pairs, train=run.train_pairs), trained, log, out, overwrite, merge, show)


def _write_outputs(model, config: TrainConfig, pairs: TrainingPairs, trained: pd.DataFrame, log: dict[str, Any],
                   out: Path, overwrite: bool, merge: bool, show: bool) -> TrainResult:
    """Rank 0 after training: model, config, log and test metrics into the run folder, then move it to OUT.
    `trained` holds the rows the loss trained on; their texts' fingerprints go with the model."""
    from .export import adapter_folder, merge_adapter
    from .models import load_model

    sets = pairs.test_sets()
    if show:
        scored = ([f"{len(sets.tickets)} test tickets"] if sets.tickets is not None else []) \
            + [f"{len(frame)} {name} pairs" for name, frame in sets.pairs.items()]
        _say(f"restored the {log['restored']} weights (eval {config.eval_metric} {fmt(log['best']['value'])} at step "
             f"{log['best']['step']}); scoring {', '.join(scored)}")
        if log["restored"] == "best" and log["best"]["step"] == 0:
            _say(f"note: no training step beat the untuned model on eval {config.eval_metric}, so the saved model "
                 "equals it; try another lr, loss or more epochs")
    base = load_model(config.model_name, config.max_seq_length)
    metrics, scores = judge(model, base, sets, config.retrieval_queries, config.threshold_cv_folds,
                            config.bootstrap_resamples, config.seed)
    del base
    model.model_card_data.add_tags(["tickettune", "curriculum-learning"] + (["lora"] if config.use_lora else []))
    with atomic_output_dir(out, overwrite=overwrite, keep_on_error=True) as folder:
        model.save_pretrained(str(folder / "model"))
        leakage.write_training_texts(folder / "model", trained)
        with open(folder / "model" / "README.md", "a", encoding="utf-8") as card:
            card.write(card_section(config, log, metrics, pairs.source))
        if merge:
            merged = load_model(str(folder / "model"))
            merge_adapter(merged, adapter_folder(folder / "model"))
            merged.save_pretrained(str(folder / "model-merged"))
            leakage.write_training_texts(folder / "model-merged", trained)
        dump_config(config.model_copy(update={"output_dir": str(out)}), folder / "config.yaml")
        write_training_log(log, folder)
        write_json(folder / "metrics.json", metrics)
        headline = sets.headline
        details = {"base model": config.model_name, "recipe": f"{config.loss} loss, lr {config.lr:g}, "
                   f"{'LoRA r=' + str(config.lora_r) if config.use_lora else 'full fine-tuning'}, epochs "
                   + "/".join(f"{e:g}" for e in config.phase_epochs), "pairs": pairs.source or "-",
                   "test sets": ", ".join(f"{name} ({len(frame)})" for name, frame in
                                          ([("tickets", sets.tickets)] if sets.tickets is not None else [])
                                          + list(sets.pairs.items())),
                   "training time": f"{log['train_seconds']:.0f} s ({log['pairs_per_second']:.1f} rows/s)"}
        if log.get("update_scale"):
            details["update scale"] = f"{log['update_scale']['chosen']:g} (WiSE-FT, chosen on eval {config.eval_metric})"
        write_report(folder, training_report(metrics, log, sets.pairs[headline], scores[headline],
                                             trained if config.loss in GROUP_LOSSES else pairs.train, f"tickettune: {Path(config.model_name).name} fine-tuned vs untuned", details))
        shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
        (folder / RUN_FILE).unlink(missing_ok=True)
        files = sorted(p.name for p in folder.iterdir())
    return TrainResult(out, metrics, log, config, files, {name: s["model"] for name, s in scores.items()})
