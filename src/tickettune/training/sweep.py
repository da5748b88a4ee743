"""Hyper-parameter sweeps: an Optuna study over the training recipe, shared by workers through a database.

`Sweep(base, pairs, storage)` opens (or joins) the study named `study_name` in the storage URL
(`sqlite:///sweep.db` on one machine; a PostgreSQL or MySQL URL for workers on many machines).
`Sweep.run(n)` trains n trials with `train.train`, each drawing from a `SearchSpace` (learning
rate, epochs per phase, LoRA rank, loss, schedule) over the base config, and maximises the best
eval metric of the run (config.eval_metric on the eval pairs; the test pairs never steer the
search). Every evaluation is reported to the trial, and a MedianPruner stops trials that trail
the others at the same step. `Sweep.best()` gives the best trial as a config for `tickettune train`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
from rich import box
from rich.table import Table

from tickettune.core.errors import UserError
from tickettune.core.textio import table_sha256
from tickettune.data.pairs_io import PHASES
from tickettune.evaluation.report import fmt
from tickettune.training.config import SCHEDULERS, TrainConfig, dump_config, make_config
from tickettune.training.dataset import SINGLE_PHASE, TrainingData, load_pairs, refuse_test_texts_in_training
from tickettune.training.run import train

INSTALL = "pip install 'tickettune[sweep]'"
# Config keys that name files or folders: they differ between machines and do not change a trial's result.
PATH_KEYS = ("output_dir", "pairs_dir", "train_file", "eval_file", "test_file")
SETUP_ATTR = "tickettune_setup"
SHORT_SCHEDULERS = {"constant_with_warmup": "constant", "warmup_cosine": "cosine"}


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError(f"tickettune sweep needs Optuna, which is not installed; {INSTALL}") from None
    return optuna


@dataclass(frozen=True)
class SearchSpace:
    """What a trial draws; every other knob comes from the base config.

    lr: log-uniform range. epochs: integer range of epochs for each curriculum phase. lora_r: ranks
    (lora_alpha follows, keeping the base config's alpha/r ratio, so the rank changes capacity and
    not the step size). losses, schedulers: choices; schedule_per_phase is drawn when there are
    several phases. Config keys listed in `fixed` keep the base config's value and are not drawn.
    """

    lr: tuple[float, float] = (1e-5, 1e-3)
    epochs: tuple[int, int] = (1, 3)
    lora_r: tuple[int, ...] = (4, 8, 16, 32)
    losses: tuple[str, ...] = ("cosine", "cosent", "online_contrastive", "mnrl", "hybrid")
    schedulers: tuple[str, ...] = SCHEDULERS
    fixed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.lr[0] <= self.lr[1] <= 1:
            raise UserError(f"learning-rate range {self.lr} is invalid; give 0 < low <= high <= 1, e.g. (1e-5, 1e-3)")
        if not 1 <= self.epochs[0] <= self.epochs[1]:
            raise UserError(f"epochs range {self.epochs} is invalid; give 1 <= low <= high, e.g. --max-epochs 3")
        if not self.lora_r or not self.losses or not self.schedulers:
            raise UserError("the search space needs at least one LoRA rank, loss and scheduler")

    def suggest(self, trial, base: TrainConfig, phases: list[str]) -> TrainConfig:
        """The config of one trial: `trial` (an Optuna trial, or optuna.trial.FixedTrial of stored params)
        draws the knobs; `phases` are the curriculum phases present in the train pairs, in order."""
        values: dict[str, Any] = base.model_dump()
        if "lr" not in self.fixed:
            values["lr"] = trial.suggest_float("lr", *self.lr, log=True)
        if "phase_epochs" not in self.fixed:
            drawn = {p: trial.suggest_int(f"epochs_{p}", *self.epochs) for p in phases}
            # phase_epochs has one slot per curriculum phase up to the last present one; absent phases get 0.
            names = [SINGLE_PHASE] if phases == [SINGLE_PHASE] else PHASES[:PHASES.index(phases[-1]) + 1]
            values["phase_epochs"] = [drawn.get(p, 0) for p in names]
        if base.use_lora and "lora_r" not in self.fixed:
            values["lora_r"] = trial.suggest_categorical("lora_r", list(self.lora_r))
            if "lora_alpha" not in self.fixed:
                values["lora_alpha"] = base.lora_alpha / base.lora_r * values["lora_r"]
        if "loss" not in self.fixed:
            values["loss"] = trial.suggest_categorical("loss", list(self.losses))
        if "scheduler" not in self.fixed:
            values["scheduler"] = trial.suggest_categorical("scheduler", list(self.schedulers))
        if len(phases) > 1 and "schedule_per_phase" not in self.fixed:
            values["schedule_per_phase"] = trial.suggest_categorical("schedule_per_phase", [False, True])
        return make_config(values)


def train_phases(train_pairs: pd.DataFrame) -> list[str]:
    """Curriculum phases present in the train pairs, in order; [SINGLE_PHASE] when they have none."""
    present = set(train_pairs["phase"]) if "phase" in train_pairs else set()
    return [p for p in PHASES if p in present] or [SINGLE_PHASE]


def default_eval_steps(pairs: TrainingData, config: TrainConfig, phases: list[str]) -> int:
    """Steps of one epoch of one phase (pair losses): evaluating on this common grid lets the pruner
    compare trials at the same step even when their phases end at different steps."""
    per_step = config.batch_size * config.gradient_accumulation_steps
    return max(1, math.ceil(len(pairs.train) / len(phases) / per_step))


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, attempts: int = 6):
    """An Optuna RDBStorage for a SQLAlchemy URL, with heartbeats so that trials of a worker that died are
    marked failed and retried once. UserError for a URL that is malformed, lacks its driver or cannot be opened."""
    optuna = _optuna()
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    hint = "use e.g. sqlite:///sweep.db (one machine) or postgresql://USER:PASSWORD@HOST/DB (several)"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"--storage {url!r} is not a database URL; {hint}") from None
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database and parsed.database != ":memory:" and not Path(parsed.database).parent.is_dir():
        raise UserError(f"--storage {_shown(url)}: folder {Path(parsed.database).parent} does not exist; create it first")
    # SQLite: wait for the other workers' writes instead of failing with "database is locked".
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=60,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except ArgumentError as exc:  # unknown dialect
            raise UserError(f"--storage {_shown(url)}: {str(exc).splitlines()[0]}; {hint}") from None
        except ImportError:
            raise UserError(f"--storage {_shown(url)}: the database driver is not installed; pip install "
                            f"'psycopg[binary]' (PostgreSQL; psycopg2-binary with SQLAlchemy before 2.1) or pymysql "
                            f"(MySQL, URL mysql+pymysql://...)") from None
        except SQLAlchemyError as exc:
            # Workers that start together on a new database race to create its tables; the losers retry.
            if attempt == attempts - 1:
                reason = str(getattr(exc, "orig", exc)).splitlines()[0]
                raise UserError(f"--storage {_shown(url)}: cannot open the database ({reason}); check the host, "
                                "the credentials and that the database exists") from None
            time.sleep(0.25 * 2 ** attempt)


class Sweep:
    """An Optuna study over `space` around the `base` config, trained on `pairs`, stored at `storage`.

    base: TrainConfig (model, batch size and every knob not drawn). pairs: TrainingData or a
    directory made by `tickettune pairs`. storage: SQLAlchemy URL shared by all workers. out: keep
    each trial's run in OUT/STUDY/trial-NNNN (default: a temporary folder, deleted after the trial).
    pruner: an Optuna pruner (default MedianPruner). Unless base.eval_steps is set, trials are
    evaluated every `default_eval_steps` steps so that they can be compared step by step.
    """

    def __init__(self, base: TrainConfig, pairs: TrainingData | str | Path, storage: str, study_name: str = "tickettune",
                 space: SearchSpace | None = None, out: str | Path | None = None, pruner=None,
                 allow_leakage: bool = False) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("tickettune sweep runs one process per worker; start several sweep workers instead of torchrun")
        if base.stage == "head":
            raise UserError("sweep searches the encoder stage's knobs (lr, epochs, LoRA rank, loss, schedule), and the "
                            "base recipe trains a head; pass --preset recommended-lora or --set stage=encoder")
        optuna = _optuna()
        self.pairs = pairs if isinstance(pairs, TrainingData) else load_pairs(pairs)
        if not allow_leakage:
            refuse_test_texts_in_training(self.pairs, "sweep")
        self.allow_leakage = allow_leakage
        self.space = space or SearchSpace()
        self.phases = train_phases(self.pairs.train)
        if base.eval_steps is None:
            base = base.model_copy(update={"eval_steps": default_eval_steps(self.pairs, base, self.phases)})
        self.base = base
        self.out = Path(out) if out is not None else None
        if self.out is not None and self.out.exists() and not self.out.is_dir():
            raise UserError(f"-o {self.out} is a file; name a folder for the trials' runs")
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by run(), one line each
        self.study = optuna.create_study(
            storage=open_storage(storage), study_name=study_name, direction="maximize", load_if_exists=True,
            pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5))
        self._join(self.study, storage)

    def _setup(self) -> dict[str, Any]:
        """What every worker of a study must share: the knobs (paths aside), the search space and the data."""
        knobs = self.base.model_dump(exclude=set(PATH_KEYS))
        knobs["model_name"] = Path(knobs["model_name"]).name  # the same model may live at another path elsewhere
        space = {k: sorted(v) if k == "fixed" else list(v) for k, v in asdict(self.space).items()}  # --set order is free
        return {"config": knobs, "space": space,
                "train_sha256": table_sha256(self.pairs.train), "eval_sha256": table_sha256(self.pairs.eval)}

    def _join(self, study, storage: str) -> None:
        """Record this worker's setup in a new study; refuse to join a study started with another one."""
        mine = self._setup()
        theirs = study.user_attrs.get(SETUP_ATTR)
        if theirs is None:
            study.set_user_attr(SETUP_ATTR, mine)
            return
        for part in ("config", "space"):
            for key in sorted(set(mine[part]) | set(theirs[part])):
                if mine[part].get(key) != theirs[part].get(key):
                    raise UserError(f"study '{study.study_name}' in {_shown(storage)} was started with {key} = "
                                    f"{theirs[part].get(key)!r}, this worker has {mine[part].get(key)!r}; use the same "
                                    "settings as the other workers, or another --study-name")
        for part, what in (("train_sha256", "train"), ("eval_sha256", "eval")):
            if mine[part] != theirs[part]:
                raise UserError(f"study '{study.study_name}' was started with other {what} pairs; give every worker "
                                "the same pairs, or use another --study-name")

    @contextlib.contextmanager
    def _run_folder(self, number: int) -> Iterator[Path]:
        """OUT/STUDY/trial-NNNN with -o; else a temporary folder, deleted when the trial ends."""
        if self.out is not None:
            yield self.out / re.sub(r"[^\w.-]", "_", self.study.study_name) / f"trial-{number:04d}"
            return
        with tempfile.TemporaryDirectory(prefix="tickettune-trial-") as scratch:
            yield Path(scratch) / "run"

    def objective(self, trial, show_progress: bool = False, say: Callable[[str], None] = print) -> float:
        """Train one trial; report every evaluation and stop (prune) when the pruner says so."""
        optuna = _optuna()
        config = self.space.suggest(trial, self.base, self.phases)
        metric = config.eval_metric
        say(f"trial {trial.number}: {describe(trial.params)}")

        def report(step: int, metrics: dict[str, float]) -> bool:
            value = metrics.get(metric)
            if value is None or math.isnan(value):
                return False
            trial.report(value, step)
            return trial.should_prune()

        started = time.perf_counter()
        with self._run_folder(trial.number) as folder:
            result = train(config, self.pairs, folder, show_progress=show_progress, allow_leakage=self.allow_leakage,
                           on_evaluate=report)
        log = result.log
        value = log["best"]["value"] if config.save_best_model else (log["evals"][-1][metric] if log["evals"] else None)
        trained = log["steps"][-1]["step"] if log["steps"] else 0
        trial.set_user_attr("steps", f"{trained}/{log['total_steps']}")
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        if log["stopped_at_step"] is not None:
            say(f"trial {trial.number} pruned at step {log['stopped_at_step']} of {log['total_steps']}: its eval {metric} "
                "trailed the other trials at that step")
            raise optuna.TrialPruned()
        say(f"trial {trial.number} complete: eval {metric} {fmt(value)} (best at step {log['best']['step']})")
        return math.nan if value is None else float(value)

    def run(self, trials: int, show_progress: bool = False, say: Callable[[str], None] = print) -> None:
        """Run `trials` trials in this worker (the study's total is the sum over its workers)."""
        if trials < 1:
            raise UserError(f"--trials {trials}: run at least 1 trial")
        self.study.optimize(lambda trial: self.objective(trial, show_progress, say), n_trials=trials,
                            gc_after_trial=True)

    def _best_trial(self):
        """The complete trial with the highest value, from every worker; None before one completes."""
        try:  # Optuna counts complete trials only (a pruned one carries its last intermediate value)
            return self.study.best_trial
        except ValueError:
            return None

    def best(self) -> tuple[Any, TrainConfig]:
        """The best complete trial of the study (all workers) and its full config (this worker's paths)."""
        trial = self._best_trial()
        if trial is None:
            counts = pd.Series([t.state.name.lower() for t in self.study.trials]).value_counts().to_dict()
            summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials"
            raise UserError(f"study '{self.study.study_name}' has no completed trial ({summary}); run more trials, "
                            "or check the eval pairs and the learning-rate range")
        return trial, self.space.suggest(_optuna().trial.FixedTrial(trial.params), self.base, self.phases)

    def table(self) -> Table:
        """Every trial of the study (the best marked *): eval value (or state when not complete), its knobs (drawn,
        or the base config's where fixed), steps trained of planned, seconds."""
        best = getattr(self._best_trial(), "number", None)
        base = self.base
        table = Table(title=f"study '{self.study.study_name}': {len(self.study.trials)} trials, "
                            f"maximising eval {base.eval_metric}", box=box.SIMPLE_HEAD, pad_edge=False)
        for name in ("trial", base.eval_metric, "lr", "epochs", "r", "loss", "schedule", "steps", "s"):
            # Numbers stay whole; on a narrow terminal the loss and schedule names fold instead.
            text = name in ("loss", "schedule")
            table.add_column(name, justify="left" if text else "right", no_wrap=not text, overflow="fold")
        for t in self.study.trials:
            params = t.params
            state = t.state.name.lower()
            epochs = [params.get(f"epochs_{p}", e) for p, e in zip(self.phases, base.phase_epochs)]
            schedule = params.get("scheduler", base.scheduler)
            schedule = SHORT_SCHEDULERS.get(schedule, schedule)
            if params.get("schedule_per_phase", base.schedule_per_phase):
                schedule += " per phase"
            table.add_row(f"{t.number}{' *' if t.number == best else ''}", fmt(t.value) if state == "complete" else state,
                          f"{params.get('lr', base.lr):.1e}", "/".join(f"{e:g}" for e in epochs),
                          str(params.get("lora_r", base.lora_r if base.use_lora else "-")), params.get("loss", base.loss),
                          schedule, t.user_attrs.get("steps", ""), str(t.user_attrs.get("seconds", "")),
                          style="bold" if t.number == best else None)
        return table


def describe(params: dict[str, Any]) -> str:
    """A trial's drawn knobs on one line."""
    return ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())


def write_best_config(config: TrainConfig, path: str | Path) -> None:
    """The best trial's config as YAML for `tickettune train --config FILE -o OUT`, written atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"--best-config {path}: folder {path.parent} does not exist; create it or choose another path")
    config = config.model_copy(update={"output_dir": None})
    tmp = path.with_name(f".{path.name}.tmp")
    dump_config(config, tmp)
    os.replace(tmp, path)
