"""Curriculum training with LoRA (or every weight) on sentence-transformers' trainer.

`train(config, pairs, out)` plans every phase's batches up front (schedule.py for pairs, groups.py for
labelled tickets), hands them to SentenceTransformerTrainer as one pass (trainer.py), evaluates on the eval
pairs and eval tickets every `eval_steps` and at each phase end, keeps the best weights, scales the learned
update to the best eval value when asked (WiSE-FT), judges the result on the held-out sets, and writes OUT
atomically:

    OUT/model/            the tuned model (LoRA adapter + sentence-transformers files, model card)
    OUT/model-merged/     with merge=True: the adapter folded into a standalone full model
    OUT/config.yaml       the resolved configuration
    OUT/training_log.json loss, learning rate and eval metrics per step, phase boundaries
    OUT/training_log.csv  the same per step, one row each
    OUT/metrics.json      tuned vs untuned on each held-out set (outputs.py writes these and the report)

With config.stage == "head" the encoder stays frozen and head_training.py trains a linear head on its cached
vectors instead. Work happens in errors.partial_dir(OUT) (checkpoints included) and moves into place at the end,
so `resume=True` can continue a killed run from its last checkpoint. Under torchrun every
process trains (data parallel) and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import transformers
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback

from tickettune.core.errors import UserError
from tickettune.core.files import check_output_dir, partial_dir
from tickettune.core.jsonio import write_json
from tickettune.core.models import check_positions
from tickettune.data import leakage
from tickettune.data.pairs_io import PHASES
from tickettune.evaluation.judge import judge
from tickettune.evaluation.report import fmt
from tickettune.training.checkpoints import RUN_FILE, prepare_workdir, run_fingerprint
from tickettune.training.config import TrainConfig
from tickettune.training.dataset import (
    TrainingData,
    assign_phases,
    eval_tickets,
    load_pairs,
    phase_epochs,
    refuse_test_texts_in_training,
)
from tickettune.training.feedback_pairs import add_feedback, read_feedback
from tickettune.training.groups import HARD_SHARE, GroupPool, plan_group_batches
from tickettune.training.lora import add_lora, parameter_counts
from tickettune.training.loss_registry import loss_spec
from tickettune.training.losses import build_loss, loss_columns
from tickettune.training.outputs import RunOutputs, TrainResult, calibrate_run, scored_sets, write_run
from tickettune.training.schedule import Plan, plan_batches, plan_scheduler
from tickettune.training.trainer import (
    BestModel,
    CurriculumTrainer,
    PairEvaluator,
    PhaseCallback,
    StopCallback,
    UpdateScaler,
    choose_update_scale,
    say,
    training_arguments,
    training_dataset,
    training_log,
)


def guide_model(config: TrainConfig):
    """group_gist's guide: the untuned model, which decides which in-batch negatives are too close to count."""
    if config.loss != "group_gist":
        return None
    from tickettune.core.models import load_model

    return load_model(config.model_name, config.max_seq_length)


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
    if loss_spec(config.loss).distinct_texts_per_batch:
        text_columns = [c for c in columns if c != "label"]
        texts = [tuple(row) for row in frame[text_columns].itertuples(index=False)]
    lengths = row_lengths(model, frame, columns, config.max_seq_length) if config.length_grouped_batches else None
    return plan_batches(rows, epochs, config.batch_size, config.seed, curriculum=config.curriculum,
                        world_size=world_size, accumulation=config.gradient_accumulation_steps, lengths=lengths,
                        texts=texts)


def _announcement(config: TrainConfig, plan: Plan, trainable: int, total: int, checkpoint: Path | None) -> str:
    """The line printed before training: what trains, how many parameters, how many steps per phase."""
    return (f"training {config.model_name} ({'LoRA' if config.use_lora else 'full'}): {trainable:,} of {total:,} "
            f"parameters trainable ({100 * trainable / total:.2f}%); {config.loss} loss, {plan.total_steps} steps over "
            f"{', '.join(f'{p.name} {p.steps}' for p in plan.phases)}"
            + (f"; {plan.world_size} processes" if plan.world_size > 1 else "")
            + (f"; {plan.dropped} pairs skipped (their texts already filled the batches)" if plan.dropped else "")
            + (f"; resuming from {checkpoint.name}" if checkpoint else ""))


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


def _group_rows(config: TrainConfig, pairs: TrainingData, model, world_size: int) -> tuple[pd.DataFrame, list[str], Plan]:
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
    one_per_group = loss_spec(config.loss).kind == "group_pairs"
    frame, plan = plan_group_batches(pool, epochs, batch_size=config.batch_size,
                                     groups_per_batch=config.groups_per_batch, one_per_group=one_per_group,
                                     seed=config.seed, curriculum=config.curriculum, world_size=world_size,
                                     accumulation=config.gradient_accumulation_steps)
    return frame, (["anchor", "positive"] if one_per_group else ["text", "label"]), plan


def prepare_run(config: TrainConfig, pairs: TrainingData, phases: str, world_size: int = 1) -> PreparedRun:
    """What `train` and `estimate` both need (see PreparedRun), from the untuned model."""
    from tickettune.core.models import load_model

    model = load_model(config.model_name, config.max_seq_length)
    check_positions(model, config.max_seq_length, config.model_name)
    evaluator = PairEvaluator(pairs.eval.head(config.eval_subset) if config.eval_subset else pairs.eval,
                              config.eval_metric, config.threshold_cv_folds, config.seed, eval_tickets(pairs, config),
                              config.retrieval_queries)
    evaluator.check()
    if loss_spec(config.loss).trains_on == "tickets":
        frame, columns, plan = _group_rows(config, pairs, model, world_size)
        return PreparedRun(model, pairs.train, evaluator, frame, columns, plan)
    train_pairs = assign_phases(pairs.train, phases, model, config.seed)
    epochs = phase_epochs(train_pairs, config)
    frame, columns = loss_columns(train_pairs, config)
    return PreparedRun(model, train_pairs, evaluator, frame, columns,
                       plan_rows(frame, columns, epochs, config, model, world_size))


def build_trainer(config: TrainConfig, model, frame: pd.DataFrame, columns: list[str], plan: Plan, args, *,
                  callbacks: list | None = None, evaluator: PairEvaluator | None = None,
                  best: BestModel | None = None) -> CurriculumTrainer:
    """The trainer `train` runs and `estimate` times: the config's loss over the plan's batches of `frame`'s
    `columns`, on the plan's learning-rate schedule, without the library's per-step print."""
    trainer = CurriculumTrainer(
        model=model, args=args, train_dataset=training_dataset(frame, columns),
        loss=build_loss(config, model, guide_model(config)), evaluator=evaluator,
        schedule=partial(plan_scheduler, plan=plan, scheduler=config.scheduler, warmup=config.warmup_steps,
                         warmup_ratio=config.warmup_ratio, per_phase=config.schedule_per_phase),
        best=best or BestModel(), callbacks=callbacks or [])
    trainer.remove_callback(PrinterCallback)
    return trainer


def check_stage_options(config: TrainConfig, *, resume: bool, merge: bool, phases: str, pruned: bool = False) -> None:
    """Refuse options that mean nothing for the head stage, before any data is read."""
    if config.stage == "head" and (resume or merge or phases != "keep" or pruned):
        raise UserError("--resume, --merge, --phases and pruning are for the encoder stage; the head stage "
                        "(stage: head) trains in seconds from cached vectors and saves a standalone model")


def train(config: TrainConfig, pairs: TrainingData | str | Path, out: str | Path, *, overwrite: bool = False,
          resume: bool = False, merge: bool = False, allow_leakage: bool = False, phases: str = "keep",
          show_progress: bool = True,
          on_evaluate: Callable[[int, dict[str, float]], bool] | None = None) -> TrainResult:
    """Train config.model_name on the curriculum phases and write OUT (see the module docstring).

    Takes labelled tickets (group losses: the registry's `tickets` losses, from pairs.tickets["train"]) or pairs
    (the other losses); returns a TrainResult whose `metrics` compare tuned and untuned on each held-out set.

        >>> from tickettune.training.config import resolve_config
        >>> from tickettune.training.run import train
        >>> config = resolve_config("recommended", sets=["phase_epochs=[1,1,1]"])   # doctest: +SKIP
        >>> result = train(config, "pairs/", "run/")                                # doctest: +SKIP
        >>> result.metrics["retrieval"]["change"]["precision@10_ci95"]              # doctest: +SKIP
        [0.012, 0.031]

    pairs: TrainingData, or a directory made by `tickettune pairs`.
    phases: keep the train pairs' phases (one phase when they have none), `single`, or `difficulty`
    (easy/medium/hard as `tickettune pairs` assigns them: terciles of the base model's difficulty per label).
    resume: continue the interrupted run of the same OUT from its last checkpoint.
    merge: also write OUT/model-merged, the adapter folded into a standalone full model.
    on_evaluate: called as on_evaluate(step, eval_metrics) after each evaluation of a trained step (rank 0);
    returning True stops training there (e.g. to prune a hyper-parameter trial). The log records the
    step as `stopped_at_step`; outputs are written as for a complete run.
    """
    if config.stage == "head":
        from tickettune.training.head_training import train_head

        check_stage_options(config, resume=resume, merge=merge, phases=phases, pruned=on_evaluate is not None)
        return train_head(config, pairs, out, overwrite=overwrite, allow_leakage=allow_leakage,
                          show_progress=show_progress)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    out = Path(out)
    check_output_dir(out, overwrite)
    pairs = pairs if isinstance(pairs, TrainingData) else load_pairs(pairs)
    if config.mask_pii:  # before anything reads, stores or shows a text
        pairs = pairs.masked()
    if merge and not config.use_lora:
        raise UserError("--merge folds a LoRA adapter into the model, but use_lora is false (the model is already full)")
    if not allow_leakage:
        refuse_test_texts_in_training(pairs)
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    show = show_progress and rank == 0

    run = prepare_run(config, pairs, phases, world_size)
    log = _fit(config, run, partial_dir(out), resume=resume, overwrite=overwrite, world_size=world_size, rank=rank,
               show=show, on_evaluate=on_evaluate)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Leave the process group together: a rank that exits while others still hold it aborts in gloo's threads
        # ("terminate called without an active exception"). _fit's trainer, whose DDP reducer also holds the
        # group, is gone by now: a reducer freed after the other ranks have left (rank 0 writes the outputs
        # first) joins gloo threads that wait for them forever (seen here as a hung test).
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank != 0:
        return TrainResult(out, {}, log, config)
    # The report's per-phase statistics need the phases training used, also when they were assigned here.
    trained = run.frame if loss_spec(config.loss).trains_on == "tickets" else run.train_pairs
    return _write_outputs(run.model, config, replace(pairs, train=run.train_pairs), trained, log, out,
                          overwrite=overwrite, merge=merge, show=show)


def _fit(config: TrainConfig, run: PreparedRun, work: Path, *, resume: bool, overwrite: bool, world_size: int,
         rank: int, show: bool, on_evaluate: Callable[[int, dict[str, float]], bool] | None) -> dict[str, Any]:
    """Add LoRA (or not), train the planned batches with checkpoints under `work`, restore the best weights and
    choose the update scale; returns the training log. The model is changed in place."""
    model, evaluator, frame, columns, plan = run.model, run.evaluator, run.frame, run.columns, run.plan
    fingerprint = run_fingerprint(config, frame, world_size)
    checkpoint = prepare_workdir(work, fingerprint, resume, overwrite)

    transformers.set_seed(config.seed)  # LoRA's initial weights
    untuned = UpdateScaler(model, config.use_lora)
    if config.use_lora:
        trainable, total = add_lora(model, config)
    else:
        trainable, total = parameter_counts(model)
    if show:
        say(_announcement(config, plan, trainable, total, checkpoint))

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
    trainer = build_trainer(config, model, frame, columns, plan, args, evaluator=evaluator, best=best,
                            callbacks=[PhaseCallback(plan, best, config.eval_metric, show)] + ([stopper] if stopper else []))
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
    return log


def _write_outputs(model, config: TrainConfig, pairs: TrainingData, trained: pd.DataFrame, log: dict[str, Any],
                   out: Path, *, overwrite: bool, merge: bool, show: bool) -> TrainResult:
    """Rank 0 after training: judge the tuned weights against the untuned model, then write OUT (write_run)."""
    from tickettune.core.models import load_model
    from tickettune.training.export import adapter_folder, merge_adapter

    sets = pairs.test_sets()
    if show:
        say(f"restored the {log['restored']} weights (eval {config.eval_metric} {fmt(log['best']['value'])} at step "
             f"{log['best']['step']}); scoring {scored_sets(sets)}")
        if log["restored"] == "best" and log["best"]["step"] == 0:
            say(f"note: no training step beat the untuned model on eval {config.eval_metric}, so the saved model "
                 "equals it; try another lr, loss or more epochs")
    base = load_model(config.model_name, config.max_seq_length)
    metrics, scores = judge(model, base, sets, queries=config.retrieval_queries,
                            folds=config.threshold_cv_folds, resamples=config.bootstrap_resamples, seed=config.seed)
    del base
    calibration = calibrate_run(model, config, pairs, show)
    model.model_card_data.add_tags(["tickettune", "curriculum-learning"] + (["lora"] if config.use_lora else []))

    def save(folder: Path) -> None:
        model.save_pretrained(str(folder / "model"))
        leakage.write_training_texts(folder / "model", trained)
        if merge:
            merged = load_model(str(folder / "model"))
            adapter = adapter_folder(folder / "model")
            if adapter is None:
                raise UserError("--merge: the trained model has no LoRA adapter to merge (a full fine-tune needs none)")
            merge_adapter(merged, adapter)
            merged.save_pretrained(str(folder / "model-merged"))
            leakage.write_training_texts(folder / "model-merged", trained)
            if calibration is not None:
                calibration.save(folder / "model-merged")

    recipe = (f"{config.loss} loss, lr {config.lr:g}, "
              f"{'LoRA r=' + str(config.lora_r) if config.use_lora else 'full fine-tuning'}, epochs "
              + "/".join(f"{e:g}" for e in config.phase_epochs))
    return write_run(RunOutputs(config, pairs, sets, metrics, scores, log, recipe,
                                trained if loss_spec(config.loss).trains_on == "tickets" else pairs.train,
                                calibration=calibration),
                     save, out, overwrite)


def _with_feedback(data: TrainingData, feedback: Path, config: TrainConfig) -> TrainingData:
    data, note = add_feedback(data, feedback, seed=config.seed, loss=config.loss, stage=config.stage)
    say(f"feedback: {note}")
    return data


def run_train(out: Path | None, *, pairs: Path | None = None, train_file: Path | None = None,
              eval_file: Path | None = None, test_file: Path | None = None, tickets: Path | None = None,
              group_by: str | None = None, text_columns: list[str] | None = None, preset: str | None = None,
              config_file: Path | None = None, sets: list[str] | None = None, model: str | None = None,
              budget: str | None = None, probes: list[Path] | None = None, probe_groups: list[str] | None = None,
              phases: str = "keep", overwrite: bool = False, resume: bool = False, merge: bool = False,
              allow_leakage: bool = False, feedback: Path | None = None,
              status: Callable[[str], Any] = lambda message: contextlib.nullcontext()) -> TrainResult:
    """The `train` command: resolve the config (the group recipe when the data has tickets), read the pairs or split
    a ticket export as `tickettune pairs` would, add `feedback` (an export of agents' verdicts) to the train pairs,
    train, and with tickets write the split to OUT/pairs.
    `budget` is a duration ('15m'); `probes` are same-problem probe files judged at the end (probes.read_probes).
    `status(message)` is a context manager shown while the export is split."""
    from tickettune.data.pairs_io import has_train_tickets
    from tickettune.evaluation.probes import read_probes
    from tickettune.training.budget import parse_duration
    from tickettune.training.config import resolve_config
    from tickettune.training.dataset import check_phase_mode, pairs_from_tickets

    check_phase_mode(phases)
    budget_minutes = parse_duration(budget) if budget is not None else None
    probe_sets = read_probes(probes, probe_groups)
    if tickets is not None and any(x is not None for x in (pairs, train_file, eval_file, test_file)):
        raise UserError("pass either --tickets FILE or pairs (--pairs DIR, --train/--eval/--test), not both")
    if tickets is None and (group_by or text_columns):
        raise UserError("--group-by and --text-column describe a --tickets file; pass --tickets FILE too")
    config = resolve_config(preset, config_file, sets, model_name=model, output_dir=str(out) if out else None,
                            pairs_dir=str(pairs) if pairs else None, train_file=str(train_file) if train_file else None,
                            eval_file=str(eval_file) if eval_file else None, test_file=str(test_file) if test_file else None,
                            budget_minutes=budget_minutes, tickets=tickets is not None or has_train_tickets(pairs))
    if not config.output_dir:
        raise UserError("no output directory; pass -o OUT (or set output_dir in the config file)")
    check_stage_options(config, resume=resume, merge=merge, phases=phases)
    if feedback is not None:
        read_feedback(feedback)  # a missing or empty file is said before the tickets are split
    out = Path(config.output_dir)
    if tickets is None:
        data = replace(load_pairs(config.pairs_dir, config.train_file, config.eval_file, config.test_file),
                       probes=probe_sets)
        if feedback is not None:
            data = _with_feedback(data, feedback, config)
        return train(config, data, out, overwrite=overwrite, resume=resume, merge=merge, allow_leakage=allow_leakage,
                     phases=phases)
    from tickettune.data.pairs import write_pair_dir

    check_output_dir(out, overwrite or resume)
    with status(f"splitting {tickets} and making held-out tickets and test pairs"):
        data, pairset = pairs_from_tickets(tickets, group_by, text_columns, config)
    data = replace(data, probes=probe_sets)
    if feedback is not None:
        data = _with_feedback(data, feedback, config)
    result = train(config, data, out, overwrite=overwrite, resume=resume, merge=merge, allow_leakage=allow_leakage,
                   phases=phases)
    if result.metrics:  # rank 0 of a torchrun job
        write_pair_dir(pairset, result.out / "pairs", overwrite=True, command=f"tickettune train --tickets {tickets}")
        result.files = sorted(result.files + ["pairs"])
    return result
