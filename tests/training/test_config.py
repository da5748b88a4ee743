import pytest

from tickettune.core.errors import UserError
from tickettune.training.config import PRESETS, TrainConfig, parse_set, resolve_config


def test_seed_presets_keep_the_guides_values():
    v2 = resolve_config("v2")
    assert (v2.lr, v2.phase_epochs, v2.warmup_steps, v2.batch_size, v2.max_seq_length) == (5e-5, [2, 2, 2], 100, 32, 256)
    assert (v2.lora_r, v2.lora_alpha, v2.lora_dropout, v2.loss, v2.scheduler, v2.eval_subset) == (
        16, 32, 0.1, "cosine", "constant_with_warmup", 100)
    cons = resolve_config("conservative")
    assert (cons.phase_epochs, cons.lr, cons.warmup_steps, cons.batch_size, cons.loss, cons.weight_decay,
            cons.scheduler, cons.eval_subset) == ([3, 4, 5], 3e-5, 500, 16, "mnrl", 0.01, "warmup_cosine", None)
    aggr = resolve_config("aggressive")
    assert (aggr.phase_epochs, aggr.lr, aggr.warmup_steps, aggr.lora_r, aggr.lora_alpha, aggr.lora_dropout,
            aggr.max_seq_length) == ([4, 6, 8], 2e-5, 800, 32, 64, 0.05, 256)
    hard = resolve_config("hard-focus")
    assert (hard.phase_epochs, hard.lr, hard.warmup_steps, hard.lora_r, hard.lora_alpha, hard.lora_dropout) == (
        [2, 3, 10], 4e-5, 300, 16, 32, 0.1)
    assert set(PRESETS) >= {"v2", "conservative", "aggressive", "hard-focus", "recommended"}


def test_set_overrides_are_yaml():
    cfg = resolve_config("v2", sets=["lr=3e-5", "phase_epochs=[1,1,3]", "use_lora=false", "lora_target_modules=[query]"])
    assert cfg.lr == 3e-5 and cfg.phase_epochs == [1, 1, 3] and cfg.use_lora is False
    assert cfg.lora_target_modules == ["query"]


def test_config_file_with_preset_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: aggressive\nlr: 1.0e-4\nloss: cosent\n")
    cfg = resolve_config(config_file=path, sets=["batch_size=8"])
    assert (cfg.lr, cfg.loss, cfg.lora_r, cfg.batch_size) == (1e-4, "cosent", 32, 8)


@pytest.mark.parametrize(("item", "words"), [
    ("lerning_rate=1", ["unknown config key 'lerning_rate'", "did you mean '"]),
    ("lr=0", ["'lr'", "> 0"]),
    ("lr=-1e-5", ["'lr'", "> 0"]),
    ("lora_dropout=1", ["'lora_dropout'", "< 1"]),
    ("phase_epochs=[1,-1,2]", ["phase_epochs", ">= 0"]),
    ("loss=cosin", ["'loss'", "cosine"]),
    ("batch_size=abc", ["'batch_size'", "'abc'"]),
    ("scheduler=cosine", ["'scheduler'", "warmup_cosine"]),
])
def test_bad_values_name_the_key_and_the_range(item, words):
    with pytest.raises(UserError) as info:
        resolve_config("v2", sets=[item])
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_key_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'lora_alpha'"):
        resolve_config(sets=["lora_alpah=8"])


def test_bad_set_syntax_and_bad_files(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        parse_set(["lr"])
    with pytest.raises(UserError, match="not found"):
        resolve_config(config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_config(config_file=bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        resolve_config(config_file=listy)
    with pytest.raises(UserError, match="unknown preset 'v3'; did you mean 'v2'"):
        resolve_config("v3")


def test_every_knob_of_the_notebook_exists():
    knobs = {"model_name", "use_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lr", "batch_size",
             "max_seq_length", "warmup_steps", "warmup_ratio", "weight_decay", "scheduler", "seed", "phase_epochs", "loss",
             "eval_steps", "eval_subset", "save_best_model", "threshold_cv_folds", "output_dir", "train_file",
             "eval_file", "test_file"}
    assert knobs <= set(TrainConfig.model_fields)
