"""The public Python API: `import tickettune` stays light, every name in `__all__` resolves, and the flat module
paths of 0.1 still import (as the new modules, with a DeprecationWarning) for one release."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import tickettune
from tickettune import _moved


def test_import_tickettune_does_not_load_torch():
    code = "import tickettune, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_help_does_not_load_torch():
    code = ("import sys\nfrom tickettune.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_every_public_name_resolves_and_is_listed():
    assert {"train", "run_train", "build_pairs", "PairOptions", "read_tickets", "generate_sample", "resolve_config",
            "from_pairset", "evaluate_model", "test_sets_from", "similar_tickets", "export_model"} <= set(tickettune.__all__)
    for name in tickettune.__all__:
        value = getattr(tickettune, name)
        assert callable(value) and value.__name__ == name
        assert name in dir(tickettune)
    assert tickettune.__version__
    with pytest.raises(AttributeError):
        tickettune.no_such_name  # noqa: B018


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_path_imports_with_a_warning_naming_the_new_one(old):
    sys.modules.pop(f"tickettune.{old}", None)
    new = _moved.new_path(old)
    with pytest.warns(DeprecationWarning, match=rf"tickettune\.{old} is now {new}\b.*removed in the next release"):
        module = importlib.import_module(f"tickettune.{old}")
    real = importlib.import_module(new)
    if len(_moved.MOVED[old]) == 1:
        assert module is real and real.__spec__.name == new  # the new module keeps its own spec
    else:
        assert all(getattr(module, name) is getattr(real, name) for name in dir(real) if not name.startswith("__"))


@pytest.mark.parametrize(("old", "name", "home"), [
    ("search", "model_fingerprint", "core.models"), ("search", "VectorIndex", "serving.index"),
    ("search", "similar_tickets", "serving.search"), ("config", "DEFAULT_MODEL", "core.models"),
    ("config", "PHASES", "data.pairs_io"), ("errors", "atomic_output_dir", "core.files"),
    ("errors", "UserError", "core.errors"), ("models", "add_lora", "training.lora"),
])
def test_a_name_that_moved_out_of_its_module_resolves_from_the_old_path(old, name, home):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(f"tickettune.{old}")
    assert getattr(module, name) is getattr(importlib.import_module(f"tickettune.{home}"), name)
    with pytest.raises(AttributeError, match="no attribute"):
        module.no_such_name  # noqa: B018


def test_old_import_of_train_keeps_the_function():
    """`import tickettune.train` sets the package's attribute `train`; the public function must stay."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import tickettune.train  # noqa: F401
        from tickettune.train import run_train
    from tickettune.training import run

    assert run_train is run.run_train
    assert tickettune.train is run.train


def test_old_paths_do_not_load_torch_until_imported():
    code = ("import sys, tickettune\nimport tickettune.sample\nimport tickettune.errors\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
