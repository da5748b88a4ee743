"""The flat module paths of tickettune 0.1 (`tickettune.train`, `tickettune.evaluate`, ...) for one more release.

Notebooks written against the flat package import `tickettune.<old>`; since the layered subpackages those
imports are served, by a finder on `sys.meta_path`, as the module that holds the code now, with a
DeprecationWarning naming the new path. The old paths are removed in the next release.

`MOVED` is the one table: old name -> the new module, then the modules that names which moved *out* of the old
module live in now (`search.VectorIndex` is in `serving.index`). An old path whose names all moved with it is
the new module object itself; one with names elsewhere is a small module that falls back to those homes.
Nothing is imported until an old path is: `import tickettune` stays free of torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any, Sequence

PACKAGE = "tickettune"

MOVED: dict[str, tuple[str, ...]] = {
    # core
    "errors": ("core.errors", "core.files"),
    "jsonio": ("core.jsonio",),
    "models": ("core.models", "training.lora"),
    "similarity": ("core.similarity",),
    "textio": ("core.textio",),
    "vector_cache": ("core.vector_cache",),
    # data
    "check": ("data.check",),
    "leakage": ("data.leakage",),
    "pairs": ("data.pairs",),
    "pairs_io": ("data.pairs_io",),
    "pii": ("data.pii",),
    "sample": ("data.sample",),
    "sample_catalog": ("data.sample_catalog",),
    "tickets": ("data.tickets",),
    # sources
    "pull": ("sources.pull",),
    "servicenow": ("sources.servicenow",),
    "servicenow_standin": ("sources.servicenow_standin",),
    # evaluation
    "calibration": ("evaluation.calibration",),
    "evaluate": ("evaluation.judge",),
    "plots": ("evaluation.plots",),
    "probes": ("evaluation.probes",),
    "report": ("evaluation.report",),
    "retrieval": ("evaluation.retrieval",),
    # training
    "budget": ("training.budget",),
    "checkpoints": ("training.checkpoints",),
    "config": ("training.config", "data.pairs_io", "core.models"),
    "estimate": ("training.estimate",),
    "export": ("training.export",),
    "feedback_training": ("training.feedback_pairs",),
    "groups": ("training.groups",),
    "head": ("training.head",),
    "head_training": ("training.head_training",),
    "losses": ("training.losses",),
    "run_outputs": ("training.outputs",),
    "schedule": ("training.schedule",),
    "sweep": ("training.sweep",),
    "train": ("training.run",),
    "trainer": ("training.trainer",),
    "training_data": ("training.dataset",),
    # serving
    "clusters": ("serving.clusters",),
    "encoders": ("serving.encoders",),
    "feedback": ("serving.feedback",),
    "filters": ("serving.filters",),
    "live_tickets": ("serving.live_tickets",),
    "reasons": ("serving.reasons",),
    "search": ("serving.search", "serving.index", "core.models"),
    "serve": ("serving.app",),
    "serve_http": ("serving.http_api",),
    "store": ("serving.store",),
    "sync": ("serving.sync",),
}


def new_path(old: str) -> str:
    """`tickettune.evaluate` -> `tickettune.evaluation.judge`."""
    return f"{PACKAGE}.{MOVED[old.removeprefix(PACKAGE + '.')][0]}"


class _OldPath(types.ModuleType):
    """An old module path whose names now live in several modules: each attribute from the first that has it."""

    def __init__(self, name: str, homes: Sequence[str]):
        super().__init__(name, f"Moved to {homes[0]}; see tickettune._moved.")
        self.__homes = tuple(homes)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for home in self.__homes:
            module = importlib.import_module(home)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (now {self.__homes[0]}) has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted({name for home in self.__homes for name in dir(importlib.import_module(home))})


class _Loader(importlib.abc.Loader):
    """One per old path imported."""

    def __init__(self) -> None:
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        homes = [f"{PACKAGE}.{home}" for home in MOVED[spec.name.removeprefix(PACKAGE + ".")]]
        # stacklevel 2: the warnings module skips the import machinery's frames, so this names the user's import.
        warnings.warn(f"{spec.name} is now {homes[0]}; the old path is removed in the next release",
                      DeprecationWarning, stacklevel=2)
        if len(homes) == 1:
            module = importlib.import_module(homes[0])
            self.spec = module.__spec__
            return module
        return _OldPath(spec.name, homes)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the new module ran when it was imported. The import system has just set the old
        path's spec on it, though; the new module keeps its own (pickle and multiprocessing read it)."""
        if self.spec is not None:
            module.__spec__ = self.spec


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.partition(".")
        if package != PACKAGE or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader())


def install() -> None:
    """Serve the old paths (once per interpreter, however often `tickettune` is reloaded)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
