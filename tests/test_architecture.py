"""The layers and private-names contracts (pyproject `[tool.importlinter]`) hold on the package, and fail when a
deliberately wrong import is put into a copy of it: an arrow pointing up, a name private to another module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from import_contracts import private_imports

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
needs_lint_imports = pytest.mark.skipif(LINT_IMPORTS is None, reason="lint-imports not installed: pip install import-linter")
LAYERS = "Each layer imports only the layers below it"
PRIVATE = "No module imports another module's private (underscored) names"


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under `src` (first on PYTHONPATH), with the repository's contracts."""
    # COLUMNS: its report is wrapped to the terminal's width, and a wrapped line would not match.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), str(ROOT)]), COLUMNS="500")
    return subprocess.run([LINT_IMPORTS, "--no-cache", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def copy_with(tmp_path: Path, module: str, line: str) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "tickettune", src / "tickettune", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "tickettune" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return src


@needs_lint_imports
def test_the_package_keeps_its_contracts():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{LAYERS} KEPT" in result.stdout and f"{PRIVATE} KEPT" in result.stdout


@needs_lint_imports
def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    result = lint_imports(copy_with(tmp_path, "core/errors.py", "from tickettune.serving import app  # noqa"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{LAYERS} BROKEN" in result.stdout and f"{PRIVATE} KEPT" in result.stdout
    assert "tickettune.core.errors -> tickettune.serving.app" in result.stdout  # the copy was analysed


@needs_lint_imports
def test_a_private_name_from_another_module_breaks_the_private_names_contract(tmp_path):
    # data may import core, so only the private-names contract can object
    result = lint_imports(copy_with(tmp_path, "data/leakage.py", "from tickettune.core.models import _sha256  # noqa"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{PRIVATE} BROKEN" in result.stdout and f"{LAYERS} KEPT" in result.stdout
    assert "tickettune.data.leakage (line" in result.stdout and "_sha256 from tickettune.core.models" in result.stdout


def test_private_imports_reads_absolute_and_relative_imports():
    source = "\n".join([
        "from tickettune.core.models import _sha256, resolve_model",  # 1: absolute, one private name
        "from .pairs_io import _phase",                                 # 2: relative, same package
        "from ..core import files as _files",                           # 3: an alias is the importer's own name
        "from ..core.files import __all__, __version__",                # 4: dunder names are public
        "from tickettune.data.leakage import _own",                     # 5: a module's own names are its business
        "from pandas import _libs",                                     # 6: another package's: not ours to judge
        "import tickettune.core._private_module",                       # 7: modules are private_modules' job
    ])
    assert private_imports("tickettune.data.leakage", source, "tickettune") == [
        ("tickettune.core.models", "_sha256", 1), ("tickettune.data.pairs_io", "_phase", 2)]


def test_private_imports_resolves_a_bare_relative_import():
    source = "from . import _helper\nfrom .. import _root\n"
    assert private_imports("tickettune.data.leakage", source, "tickettune") == [
        ("tickettune.data", "_helper", 1), ("tickettune", "_root", 2)]


def test_private_imports_in_a_package_init_resolve_against_the_package_itself():
    source = "from . import _helper\nfrom .core import _name\nfrom .. import _up\n"
    assert private_imports("tickettune.data", source, "tickettune", is_package=True) == [
        ("tickettune.data.core", "_name", 2), ("tickettune", "_up", 3)]
