"""The pieces sentence-transformers' trainer runs with: evaluator, best weights, callbacks, log and arguments.

`run.py` composes them: a `CurriculumTrainer` (the plan's learning-rate schedule, best weights in every checkpoint)
with a `PairEvaluator` (eval pairs, and retrieval over eval tickets), a `PhaseCallback` (evaluates at each phase
end, keeps the best weights, a progress bar per phase) and, for sweeps, a `StopCallback`. After training,
`choose_update_scale` scales the learned update (WiSE-FT) to the best eval value, and `training_log` turns the
trainer's history into the log `train` writes.

Just over 400 lines: the pieces are small and used only by one trainer, and BestModel says why it is ours.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.evaluation import BaseEvaluator
from tqdm.auto import tqdm
from transformers import TrainerCallback

from tickettune.core.errors import UserError
from tickettune.core.jsonio import write_json
from tickettune.core.similarity import SIMILAR, encode_texts, pair_cosines
from tickettune.evaluation.judge import compute_metrics, retrieval_scores, texts_of
from tickettune.evaluation.report import fmt
from tickettune.evaluation.retrieval import RETRIEVAL_KEYS, query_rows
from tickettune.training.checkpoints import CHECKPOINTS
from tickettune.training.config import TrainConfig
from tickettune.training.schedule import HF_SCHEDULER_NAMES, Plan, PlannedBatchSampler

EVAL_KEYS = ("spearman", "pearson", "roc_auc", "average_precision", "f1_cv")


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
        self.queries = (np.zeros(0, dtype=np.int64) if self.tickets is None
                        else query_rows(self.tickets["group"], queries, seed))
        self.primary_metric = metric
        self.folds = folds
        self.seed = seed
        self.seconds = 0.0

    def __call__(self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        start = time.perf_counter()
        # Eval pairs are drawn from eval tickets: one encode call covers both.
        vectors = encode_texts(model, texts_of([self.pairs], self.tickets))
        metrics = compute_metrics(self.labels, pair_cosines(vectors, self.pairs), self.folds, self.seed)
        found = {key: float(metrics[key]) for key in EVAL_KEYS}
        if self.tickets is not None and len(self.queries):
            per_query = retrieval_scores(vectors, self.tickets, self.queries)
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

    Why not the Trainer's load_best_model_at_end / metric_for_best_model (transformers 5.23, sentence-transformers
    6.2): (1) the untuned model's score (eval_on_start, step 0) never enters its comparison and no checkpoint holds
    it, and `train` promises never to save weights that score below the untuned model on eval; (2) a run has one
    save_strategy, so keeping best checkpoints means either save_strategy="best" (no periodic checkpoints for
    --resume) or a full checkpoint with optimizer state at every evaluation (about 1.3 GB for a full MPNet
    fine-tune); (3) SentenceTransformerTrainer._load_best_model logs a failed load and carries on, which would save
    the last weights under the best one's name. An in-memory copy of the adapter costs a few MB and none of these.
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
        say(f"update scale (WiSE-FT) on eval {config.eval_metric}: "
             + ", ".join(f"{s:g} -> {v:.4f}" for s, v in values.items()) + f"; kept {chosen:g}")
    return {"chosen": chosen, "eval": {f"{s:g}": v for s, v in values.items()}, "metric": config.eval_metric}


def say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class CurriculumTrainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer with the plan's schedule (`schedule(optimizer)` makes it) and best weights in each
    checkpoint."""

    def __init__(self, *args, schedule: Callable[[torch.optim.Optimizer], Any], best: BestModel, **kwargs) -> None:
        self.schedule = schedule
        self.best = best
        super().__init__(*args, **kwargs)

    def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
        # The library's card callback copies training pairs and sentences into model/README.md (its "Samples"
        # and widget); ticket texts must not travel with a deployed model. card_section writes our own card.
        pass

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            if optimizer is None:
                raise RuntimeError("the trainer makes its optimizer before its scheduler")
            self.lr_scheduler = self.schedule(optimizer)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save_checkpoint(self, model, trial) -> None:
        # Written before the trainer state, so a checkpoint with trainer_state.json always has it.
        if self.args.should_save:
            self.best.save(Path(self.args.output_dir or ".") / f"checkpoint-{self.state.global_step}")
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
            say(self._summary(self.plan.phase_at(step - 1), state))
        self._open(step)

    def _summary(self, phase, state) -> str:
        losses = [e["loss"] for e in state.log_history if "loss" in e and phase.start_step < e["step"] <= phase.end_step]
        seconds = time.perf_counter() - self.phase_started
        return (f"phase {phase.name}: steps {phase.start_step + 1}-{phase.end_step}, {phase.pairs} examples "
                f"({phase.epochs:g} epochs), mean loss {np.mean(losses) if losses else math.nan:.4f}, "
                f"eval {self.metric} {fmt(self.last_eval)} (best {fmt(self.best.value)} at step {self.best.step}), "
                f"{seconds:.0f} s")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class StopCallback(TrainerCallback):
    """Hands each evaluation after a training step to `on_evaluate(step, metrics)`; True stops training there.

    `metrics` holds the EVAL_KEYS (and RETRIEVAL_KEYS with eval tickets) without the trainer's "eval_" prefix. The
    function runs on rank 0 only and its answer is broadcast, so every process of a torchrun job stops at the same step.
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


def training_dataset(frame: pd.DataFrame, columns: list[str]):
    """The rows a loss trains on as a datasets.Dataset of its columns, in order (labels as float32)."""
    from datasets import Dataset

    data = {c: frame[c].astype("float32" if c == "label" else str).tolist() for c in columns}
    return Dataset.from_dict(data)


def training_arguments(config: TrainConfig, plan: Plan, work: Path, eval_on_start: bool):
    """The trainer's arguments for a planned run: the plan's batches, checkpoints under work/, no own schedule."""
    saving: dict[str, Any] = ({"save_strategy": "steps", "save_steps": config.save_steps} if config.save_steps
                              else {"save_strategy": "no"})
    precision: dict[str, Any] = precision_flags(config.mixed_precision)
    return SentenceTransformerTrainingArguments(
        output_dir=str(work / CHECKPOINTS),
        num_train_epochs=1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.lr,
        # schedule.plan_scheduler does the scheduling (per phase, when asked); these two describe it in the model card.
        lr_scheduler_type=HF_SCHEDULER_NAMES[config.scheduler],
        warmup_steps=config.warmup_ratio if config.warmup_ratio is not None else config.warmup_steps,
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        # A sampler instance is what the trainer calls; the arguments' annotation names only its own kinds.
        batch_sampler=PlannedBatchSampler(plan.batches),  # type: ignore[arg-type]
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
        **precision,
    )
