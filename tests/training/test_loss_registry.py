"""The loss registry is the one list of losses: config validation, the CLI, and the trainer's builder read it."""

import pytest
from sentence_transformers.sentence_transformer import losses as st_losses
from typer.testing import CliRunner

from tickettune.cli import app
from tickettune.core.errors import UserError
from tickettune.core.models import load_model
from tickettune.training.config import make_config, trains_on_tickets
from tickettune.training.loss_registry import LOSSES, loss_spec, names
from tickettune.training.losses import GROUP_TRIPLET_MARGIN, HybridLoss, build_loss


def test_every_entry_names_a_library_class_and_its_margin_keyword():
    for spec in LOSSES.values():
        if spec.kind == "hybrid":
            assert spec.library_class == ""
            continue
        cls = getattr(st_losses, spec.library_class)
        if spec.margin_keyword:
            assert spec.margin_keyword in cls.__init__.__code__.co_varnames, spec.name


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model(str(tiny_model))


@pytest.mark.parametrize("name", list(LOSSES))
def test_build_loss_makes_the_registered_class(model, name):
    extra = {"batch_size": 16} if loss_spec(name).kind == "group_triplet" else {}
    loss = build_loss(make_config({"model_name": "unused", "loss": name, **extra}), model, guide=model)
    expected = HybridLoss if name == "hybrid" else getattr(st_losses, LOSSES[name].library_class)
    assert type(loss) is expected


def test_margins_reach_the_keyword_the_library_reads(model):
    assert build_loss(make_config({"loss": "contrastive", "margin": 0.3}), model).margin == 0.3
    assert build_loss(make_config({"loss": "triplet", "margin": 0.4}), model).triplet_margin == 0.4
    group = make_config({"loss": "batch_hard_triplet", "batch_size": 16})
    assert build_loss(group, model).triplet_margin == GROUP_TRIPLET_MARGIN  # cosine distance: the library's 5 is unreachable
    hybrid = build_loss(make_config({"loss": "hybrid", "hybrid_pair_loss": "online_contrastive", "margin": 0.7}), model)
    assert hybrid.pair.margin == 0.7 and hybrid.binary_labels


def test_kinds_decide_what_a_run_trains_on():
    assert names(trains_on="tickets") == ("batch_all_triplet", "batch_hard_triplet", "batch_semi_hard_triplet",
                                          "batch_hard_soft_margin_triplet", "group_mnrl", "group_gist")
    assert names(kind="pair") == ("cosine", "cosent", "angle", "contrastive", "online_contrastive")
    assert trains_on_tickets(make_config({"loss": "group_mnrl"})) and not trains_on_tickets(make_config({"loss": "mnrl"}))
    assert [n for n in LOSSES if loss_spec(n).distinct_texts_per_batch] == ["mnrl", "triplet", "hybrid"]


def test_config_refuses_a_loss_outside_the_registry_naming_every_choice():
    with pytest.raises(UserError) as err:
        make_config({"loss": "arcface"})
    assert "'arcface' is not allowed" in str(err.value) and all(f"'{n}'" in str(err.value) for n in LOSSES)
    with pytest.raises(UserError, match="hybrid_pair_loss"):
        make_config({"hybrid_pair_loss": "mnrl"})  # MNRL is the hybrid's other half, not a pair loss


def test_presets_and_train_help_list_the_registry():
    shown = CliRunner().invoke(app, ["presets"], terminal_width=250).output
    assert all(name in shown for name in LOSSES)
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=250).output
    assert "group_gist" in " ".join(help_text.split())
