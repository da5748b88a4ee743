"""tickettune: LoRA + curriculum fine-tuning of sentence-embedding models for IT tickets.

The functions a user scripts with are importable from here (`from tickettune import train, build_pairs`); each is
imported on first use (PEP 562), so `import tickettune` and `tickettune --help` do not load torch. The flat module
paths of 0.1 (`tickettune.train`, `tickettune.evaluate`, ...) still import, with a DeprecationWarning, for one
release: `_moved.py` holds the table.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from tickettune import _moved

__version__ = "0.2.0"

# name -> the module it lives in; one line per stage of the pipeline, in its order.
_API = {
    "generate_sample": "tickettune.data.sample",
    "read_tickets": "tickettune.data.tickets",
    "PairOptions": "tickettune.data.pairs",
    "build_pairs": "tickettune.data.pairs",
    "resolve_config": "tickettune.training.config",
    "from_pairset": "tickettune.training.dataset",
    "train": "tickettune.training.run",
    "run_train": "tickettune.training.run",
    "test_sets_from": "tickettune.evaluation.judge",
    "evaluate_model": "tickettune.evaluation.judge",
    "export_model": "tickettune.training.export",
    "similar_tickets": "tickettune.serving.search",
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Keeps `tickettune.train` the function after an old `import tickettune.train` (the import system sets the
    imported module as an attribute of its package; `from tickettune.train import X` works either way)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and name in _moved.MOVED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_moved.install()
