"""An import-linter contract type the library lacks: no module imports another module's private names.

import-linter's own `private_modules` contract guards private *modules* (`pkg._impl`); tickettune keeps helpers
private by a leading underscore on the *name* (`_describe_error`), so the check reads each module's
`from X import _name` statements. A name private to one module is its own business; a caller that needs it
should get a public name in a small leaf module instead.
"""

from __future__ import annotations

import ast
import importlib.util

import grimp
from importlinter import Contract, ContractCheck, output


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(module: str, source: str, package: str, is_package: bool = False) -> list[tuple[str, str, int]]:
    """(imported module, name, line) for each private name `module` takes from another module of `package`.

    is_package: `module` is a package's __init__, whose `from . import x` means the package itself.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # relative: resolve against the importing module's package
            up = node.level - int(is_package)  # a package's `.` is itself; a module's is its package
            base = module.rsplit(".", up)[0] if up else module
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        if target != package and not target.startswith(package + "."):
            continue
        found += [(target, alias.name, node.lineno) for alias in node.names
                  if _private(alias.name) and target != module]
    return found


class PrivateNamesContract(Contract):
    """Kept when no module of the root packages imports an underscored name from another of their modules."""

    type_name = "private_names"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        broken = []
        for module in sorted(graph.modules):
            package = module.split(".")[0]
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.origin or not spec.origin.endswith(".py"):
                continue
            with open(spec.origin, encoding="utf-8") as handle:
                source = handle.read()
            is_package = spec.submodule_search_locations is not None
            broken += [(module, *hit) for hit in private_imports(module, source, package, is_package)]
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, target, name, line in check.metadata["broken"]:
            output.print_error(f"{module} (line {line}) imports the private name {name} from {target}")
            output.new_line()
