"""One source of truth for every training knob, the seed's recipes as presets, and `--set` overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tickettune.core.errors import UserError
from tickettune.core.models import DEFAULT_MODEL
from tickettune.training.loss_registry import loss_spec, names

# Each set of choices is one Literal type: mypy checks the code against it and pydantic checks the input.
PairEvalMetric = Literal["spearman", "roc_auc", "average_precision"]
RetrievalEvalMetric = Literal["precision@10", "mrr@10", "ndcg@10", "map@100", "recall@10"]
Scheduler = Literal["constant_with_warmup", "linear", "warmup_cosine"]
# What `train` tunes: the encoder's weights (LoRA or full), or a linear head on its frozen, cached vectors (head.py).
Stage = Literal["encoder", "head"]
LabelKind = Literal["auto", "coarse", "problem"]  # what the groups are evidence of (head.py)
PAIR_EVAL_METRICS: tuple[str, ...] = get_args(PairEvalMetric)
RETRIEVAL_EVAL_METRICS: tuple[str, ...] = get_args(RetrievalEvalMetric)
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
STAGES: tuple[str, ...] = get_args(Stage)
LABEL_KINDS: tuple[str, ...] = get_args(LabelKind)
PHASE_MODES = ("keep", "single", "difficulty")  # what `train --phases` does with the train pairs' phases


def _choice(value: str, choices: tuple[str, ...]) -> str:
    """A registry-backed choice, refused as pydantic refuses a Literal (so _describe_error words both alike)."""
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value

class TrainConfig(BaseModel):
    """Every knob of the user's notebook, plus the few tickettune adds. Field docs are shown by `tickettune presets`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model_name: str = Field(DEFAULT_MODEL, description="local sentence-transformers folder or hub id")
    use_lora: bool = Field(True, description="train LoRA adapters (true) or every weight (false)")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank")
    lora_alpha: float = Field(32, gt=0, description="LoRA scaling numerator")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA path")
    lora_target_modules: Optional[list[str]] = Field(None, description="modules to adapt; auto by architecture when unset")
    lr: float = Field(5e-5, gt=0, le=1, description="peak learning rate")
    batch_size: int = Field(32, ge=1, le=4096, description="pairs per step and device")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="steps accumulated per optimizer update")
    max_seq_length: int = Field(256, ge=8, le=8192, description="tokens kept per text")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps (ignored when warmup_ratio is set)")
    warmup_ratio: Optional[float] = Field(None, ge=0, lt=1, description="warmup as a share of all steps")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay")
    scheduler: Scheduler = Field(
        "constant_with_warmup", description="learning-rate shape after warmup")
    schedule_per_phase: bool = Field(False, description="restart warmup and decay at each phase, as repeated fit() calls did")
    curriculum: bool = Field(True, description="train phases in order easy->hard (false: all shuffled together)")
    seed: int = Field(42, ge=0, description="seed for shuffling, splits and initialisation")
    phase_epochs: list[float] = Field([2, 2, 2], description="epochs per curriculum phase (easy, medium, hard)")
    loss: str = Field("cosine", description="training loss (`tickettune presets` lists them); batch_*_triplet, "
                      "group_mnrl and group_gist train on tickets and their groups",
                      json_schema_extra={"enum": list(names())})
    groups_per_batch: int = Field(8, ge=2, le=4096, description="group losses: groups in each batch (batch_size tickets "
                                                                 "in all, batch_size / groups_per_batch of each)")
    max_train_tickets: Optional[int] = Field(None, ge=4, description="group losses: train tickets used (a seeded sample); "
                                                                     "all when unset. One epoch sees each once")
    hybrid_mnrl_weight: float = Field(0.5, ge=0, le=1, description="hybrid loss: weight of MNRL (the pair loss gets 1 - this)")
    hybrid_pair_loss: str = Field("cosent", description="hybrid loss: the pair loss mixed with MNRL",
                                  json_schema_extra={"enum": list(names(kind="pair"))})
    margin: Optional[float] = Field(None, gt=0, description="margin of contrastive/triplet losses (library default when unset)")
    stage: Stage = Field("encoder", description="what trains: the encoder (LoRA or full fine-tuning) or a "
                                   "linear head on its frozen vectors, cached on disk (every train ticket for one "
                                   "encoding pass)")
    label_kind: LabelKind = Field("auto", description="head stage: groups are coarse (topic, category: "
                                             "evidence of difference only) or problem links (problem_id, duplicates: "
                                             "evidence of sameness); auto: problem for 30+ small groups")
    head_epochs: int = Field(20, ge=1, le=1000, description="head stage: epochs over the train tickets' vectors")
    head_lr: float = Field(1e-3, gt=0, le=1, description="head stage: Adam learning rate")
    head_batch_size: int = Field(256, ge=8, le=65536, description="head stage: tickets per step")
    head_margin: float = Field(0.1, ge=-1, le=1, description="head stage, coarse labels: cosine below which tickets "
                                                              "of different groups are pushed")
    head_keep_weight: float = Field(1.0, ge=0, le=100, description="head stage: weight of keeping the untuned "
                                                                    "encoder's cosines where the labels say nothing")
    head_temperature: float = Field(0.1, gt=0, le=1, description="head stage, problem links: InfoNCE temperature")
    head_feedback_margin: float = Field(0.3, ge=-1, le=1, description="head stage, --feedback: cosine below which "
                                        "a rejected suggestion is pushed from its query")
    head_feedback_weight: float = Field(1.0, ge=0, le=100, description="head stage, --feedback: weight of the "
                                        "verdicts' pair term (rejected pushed below the margin, confirmed pulled "
                                        "together)")
    head_eval_metric: Literal["auto", PairEvalMetric, RetrievalEvalMetric] = Field(
        "auto", description="head stage: eval metric that keeps the best epoch and update scale; auto: mrr@10 for "
                            "problem links (a duplicate first), precision@10 for coarse groups")
    budget_minutes: Optional[float] = Field(None, gt=0, le=100000, description="head stage: minutes the run may take "
                                            "on this machine (measured throughput -> train tickets and epochs); "
                                            "15 when unset")
    vector_cache: Optional[str] = Field(None, description="head stage: folder of cached encoder vectors "
                                        "(default $TICKETTUNE_VECTOR_CACHE or ~/.cache/tickettune/vectors)")
    eval_steps: Optional[int] = Field(None, ge=1, description="evaluate every N steps (always at the end of each phase)")
    eval_subset: Optional[int] = Field(None, ge=1, description="eval pairs used during training; all when unset")
    eval_metric: Literal[PairEvalMetric, RetrievalEvalMetric] = Field(
        "spearman", description="metric that picks the best checkpoint (retrieval metrics need eval tickets)")
    eval_tickets: Optional[int] = Field(2000, ge=4, description="eval tickets searched during training (a seeded "
                                                                "sample); all when unset")
    retrieval_queries: Optional[int] = Field(1000, ge=1, description="query tickets of each retrieval evaluation (a "
                                                                     "seeded sample); all when unset")
    update_scales: list[float] = Field([1.0], description="after training, scale the learned update by each of these "
                                       "(WiSE-FT: 0 = untuned, 1 = as trained) and keep the best on eval; [1] keeps it")
    duplicate_precision: float = Field(0.9, gt=0, lt=1, description="calibrated tiers: precision the duplicate tier "
                                       "targets on held-out tickets (calibration.json in the model folder)")
    related_precision: float = Field(0.6, gt=0, lt=1, description="calibrated tiers: precision the related tier targets")
    save_best_model: bool = Field(True, description="restore the best checkpoint by eval_metric at the end")
    save_steps: Optional[int] = Field(200, ge=1, description="checkpoint every N steps, for --resume")
    threshold_cv_folds: int = Field(5, ge=2, le=50, description="folds that choose the F1 threshold")
    bootstrap_resamples: int = Field(1000, ge=100, le=100000, description="paired bootstrap resamples for intervals")
    length_grouped_batches: bool = Field(True, description="batch texts of similar length together (faster, same data)")
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        "auto", description="auto: bf16/fp16 on a GPU that supports it, none on CPU")
    mask_pii: bool = Field(False, description="mask e-mails, phones, IPs, URLs and user ids before use")
    report_to: Literal["none", "tensorboard", "mlflow"] = Field("none", description="experiment tracker")
    output_dir: Optional[str] = Field(None, description="where train writes its results")
    pairs_dir: Optional[str] = Field(None, description="directory made by `tickettune pairs`")
    train_file: Optional[str] = Field(None, description="pre-generated train pairs (instead of pairs_dir)")
    eval_file: Optional[str] = Field(None, description="pre-generated eval pairs")
    test_file: Optional[str] = Field(None, description="pre-generated test pairs")

    @field_validator("loss")
    @classmethod
    def _loss(cls, value: str) -> str:
        return _choice(value, names())

    @field_validator("hybrid_pair_loss")
    @classmethod
    def _hybrid_pair_loss(cls, value: str) -> str:
        return _choice(value, names(kind="pair"))

    @field_validator("phase_epochs")
    @classmethod
    def _epochs(cls, value: list[float]) -> list[float]:
        if not value or len(value) > 10:
            raise ValueError("must list 1 to 10 numbers, one per curriculum phase, e.g. [2, 2, 2]")
        if any(e < 0 for e in value):
            raise ValueError("epochs must be >= 0, e.g. [2, 2, 2]")
        if sum(value) <= 0:
            raise ValueError("at least one phase needs epochs > 0")
        return value

    @field_validator("update_scales")
    @classmethod
    def _scales(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 <= v <= 1 for v in value):
            raise ValueError("must list 1 or more scales in [0, 1], e.g. [0.5, 0.75, 1]")
        return sorted(set(value))

    @field_validator("lora_target_modules")
    @classmethod
    def _targets(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and not value:
            raise ValueError("must name at least one module, or be left unset for the architecture's default")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        loss = loss_spec(self.loss)
        if loss.in_batch_negatives and self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 for losses with in-batch negatives (mnrl, hybrid, group losses)")
        if loss.kind == "group_triplet" and self.batch_size < 2 * self.groups_per_batch:
            raise ValueError(f"batch_size ({self.batch_size}) must hold at least 2 tickets of each of the "
                             f"groups_per_batch ({self.groups_per_batch}) groups")
        if self.duplicate_precision < self.related_precision:
            raise ValueError(f"duplicate_precision ({self.duplicate_precision}) must be at least related_precision "
                             f"({self.related_precision})")
        return self


FIELDS = tuple(TrainConfig.model_fields)


def trains_on_tickets(config: TrainConfig) -> bool:
    """Whether a run learns from labelled tickets (the head stage, group losses) rather than from pairs: then no
    model-scored curriculum pairs are needed and their difficulty can be lexical."""
    return config.stage == "head" or loss_spec(config.loss).trains_on == "tickets"

# The seed notebook's recipes, with the values its guide gave. `recommended` is what
# benchmarks/recipes.py measured to win (see README "Which recipe wins").
_V2: dict[str, Any] = {
    "lr": 5e-5, "phase_epochs": [2, 2, 2], "warmup_steps": 100, "batch_size": 32, "max_seq_length": 256,
    "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "loss": "cosine", "scheduler": "constant_with_warmup",
    "weight_decay": 0.0, "eval_subset": 100,
}
PRESETS: dict[str, dict[str, Any]] = {
    "v2": dict(_V2),
    "conservative": {**_V2, "phase_epochs": [3, 4, 5], "lr": 3e-5, "warmup_steps": 500, "batch_size": 16,
                     "loss": "mnrl", "weight_decay": 0.01, "scheduler": "warmup_cosine", "eval_subset": None},
    "aggressive": {**_V2, "phase_epochs": [4, 6, 8], "lr": 2e-5, "warmup_steps": 800, "lora_r": 32,
                   "lora_alpha": 64, "lora_dropout": 0.05, "max_seq_length": 256, "eval_subset": None},
    "hard-focus": {**_V2, "phase_epochs": [2, 3, 10], "lr": 4e-5, "warmup_steps": 300, "eval_subset": None},
    "recommended": {
        "stage": "head", "label_kind": "auto", "head_epochs": 20, "head_lr": 1e-3, "head_batch_size": 256, "head_margin": 0.1,
        "head_keep_weight": 1.0, "head_temperature": 0.1, "head_eval_metric": "auto", "max_seq_length": 256, "eval_tickets": 2000,
        "retrieval_queries": 1000, "update_scales": [0.25, 0.5, 0.75, 1.0],
    },
    "recommended-lora": {
        "lr": 2e-4, "phase_epochs": [1, 1, 1], "max_train_tickets": 2000, "warmup_ratio": 0.1, "batch_size": 64,
        "groups_per_batch": 8,
        "max_seq_length": 64, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "loss": "batch_all_triplet",
        "scheduler": "warmup_cosine", "weight_decay": 0.01, "eval_subset": 200, "eval_tickets": 1000,
        "eval_metric": "precision@10",
        "update_scales": [0.25, 0.5, 0.75, 1.0],
    },
    "recommended-pairs": {
        "lr": 5e-4, "phase_epochs": [2, 2, 2], "warmup_ratio": 0.1, "batch_size": 32, "max_seq_length": 128,
        "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "loss": "cosent", "scheduler": "warmup_cosine",
        "weight_decay": 0.01, "eval_subset": None,
    },
}
PRESET_NOTES = {
    "v2": "the notebook as it was",
    "conservative": "guide option 1 + MNRL loss",
    "aggressive": "guide option 2",
    "hard-focus": "guide option 3",
    "recommended": "tickets with groups: a linear head on the frozen encoder's cached vectors, every train ticket the "
                   "budget allows (benchmarks/recipes.py: better search without losing duplicates)",
    "recommended-lora": "tickets with groups, LoRA on the encoder (last round's recommended; loses duplicates on topic labels)",
    "recommended-pairs": "pair files without tickets (e.g. graded STS scores)",
}
DEFAULT_PRESET = "recommended"
DEFAULT_PAIR_PRESET = "recommended-pairs"


def _closest(name: str, choices: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.0)
    return match[0] if match else choices[0]


def _describe_error(err: Mapping[str, Any]) -> str:
    key = ".".join(str(p) for p in err.get("loc", ())) or "config"
    ctx = err.get("ctx") or {}
    kind = err.get("type", "")
    got = err.get("input")
    bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
              "less_than_equal": "<= {le}"}
    if kind in bounds:
        return f"config key '{key}' = {got!r} is out of range: it must be {bounds[kind].format(**ctx)}"
    if kind == "literal_error":
        return f"config key '{key}' = {got!r} is not allowed: choose one of {ctx.get('expected')}"
    if not err.get("loc"):  # a rule across keys (model validator): its message names them
        return "config: " + str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"unknown config key '{key}'; did you mean '{_closest(key, FIELDS)}'?"
    field = TrainConfig.model_fields.get(str((err.get("loc") or ("",))[0]))
    expected = f" ({field.description})" if field is not None and field.description else ""
    return f"config key '{key}' = {got!r} is invalid: {err.get('msg', 'wrong value')}{expected}"


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Validate a dict of knobs; any problem becomes a one-line UserError naming the key."""
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise UserError(f"unknown config key '{unknown[0]}'; did you mean '{_closest(unknown[0], FIELDS)}'?")
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise UserError(_describe_error(exc.errors()[0])) from None


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML, so `phase_epochs=[1,1,3]` and `use_lora=false` work."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r} is not key=value; write e.g. --set lr=3e-5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"--set {key}: value {raw!r} is not valid YAML; quote strings, write lists as [1,1,3]") from None
        # YAML 1.1 reads 3e-5 as a string; a number was meant.
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else value
            except ValueError:
                pass
        out[key] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; save it as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a YAML mapping of key: value, not a {type(data).__name__}")
    if "preset" in data:
        base = dict(preset_values(str(data.pop("preset"))))
        base.update(data)
        data = base
    return data


def preset_values(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; did you mean '{_closest(name, list(PRESETS))}'? (see `tickettune presets`)")
    return dict(PRESETS[name])


def default_preset(tickets: bool) -> str:
    """The recipe used when none is named: the group recipe for data with labelled tickets, else the pair recipe."""
    return DEFAULT_PRESET if tickets else DEFAULT_PAIR_PRESET


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   sets: list[str] | None = None, tickets: bool = False, **explicit: Any) -> TrainConfig:
    """Defaults < preset (default_preset(tickets) when none) < config file < explicit CLI options < --set."""
    if preset and config_file:
        raise UserError("pass either --preset or --config, not both (a config file may say `preset: NAME`)")
    values: dict[str, Any] = {}
    if config_file:
        values.update(read_config_file(config_file))
    else:
        values.update(preset_values(preset or default_preset(tickets)))
    values.update({k: v for k, v in explicit.items() if v is not None})
    values.update(parse_set(sets))
    return make_config(values)


def dump_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False), encoding="utf-8")
