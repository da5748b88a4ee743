"""The README's Python API example runs as written (in a folder of its own, the vector cache there too) and prints
what the README says it prints: the model's precision@10 and the change's 95% interval."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert match, "README: no ```python block under '## Python API'"
    return match.group(1)


def test_the_example_imports_from_the_public_api():
    imported = [node for node in ast.walk(ast.parse(python_api_example())) if isinstance(node, ast.ImportFrom)]
    assert imported and all(node.module == "tickettune" for node in imported)


def test_the_python_api_example_runs(tmp_path):
    (tmp_path / "example.py").write_text(python_api_example(), encoding="utf-8")
    env = dict(os.environ, TICKETTUNE_VECTOR_CACHE=str(tmp_path / "vectors"),
               PYTHONPATH=os.pathsep.join([str(README.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    # e.g. "0.61 [0.05, 0.09]": a precision in [0, 1], then the interval of the change over the base model
    number = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
    found = re.fullmatch(rf"({number}) [\[(]({number}), ({number})[\])]", result.stdout.strip().splitlines()[-1])
    assert found, result.stdout[-2000:]
    precision, low, high = map(float, found.groups())
    assert 0 < precision <= 1 and low <= high
    assert (tmp_path / "run" / "model").is_dir()
