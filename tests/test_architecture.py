"""ARCHITECTURE.md, enforced: imports flow one way, and only derivatives calls autograd."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import atomnet

PACKAGE = Path(atomnet.__file__).parent

#: stage of each top-level module; a module imports only from its own stage or earlier ones.
#: structures and neighbors share a stage (graph building adds the neighbour list).
STAGES = {
    "keys": 0, "units": 0, "version": 0, "errors": 0, "dtypes": 0,
    "structures": 1, "neighbors": 1,
    "descriptors": 2,
    "nn": 3, "terms": 3,
    "models": 4,
    "physics": 5,
    "potential": 6, "build": 6,
    "derivatives": 7,
    "io": 8,
    "calculators": 9,
    "training": 10, "vibrations": 10, "lammps": 10,
    "cli": 11,
}
#: may import anything
FREE = {"testing", "__init__", "__main__"}
#: where torch.autograd may be called; `.backward()` additionally in training (optimiser steps)
AUTOGRAD_ALLOWED = {"derivatives", "testing"}
BACKWARD_ALLOWED = AUTOGRAD_ALLOWED | {"training"}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_stages(tree: ast.AST, module: list[str], is_package: bool) -> list[tuple[int, str]]:
    """(line, top-level atomnet module) of every atomnet import in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module[:-1]
                base = base[: len(base) - (node.level - 1)]
            else:
                base = []
            target = base + (node.module.split(".") if node.module else [])
            targets = [target] if node.module else [target + [a.name] for a in node.names]
        else:
            continue
        for target in targets:
            if len(target) >= 2 and target[0] == "atomnet":
                found.append((node.lineno, target[1]))
    return found


def import_violations(path: Path, source: str | None = None) -> list[str]:
    """Imports in ``path`` that go against the flow (later stage, or unknown module)."""
    module = _module_name(path)
    own = module[1] if len(module) > 1 else "__init__"
    if own in FREE:
        return []
    if own not in STAGES:
        return [f"{path}: module atomnet.{own} has no stage in test_architecture.STAGES"]
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    bad = []
    for line, target in _imported_stages(tree, module, path.name == "__init__.py"):
        if target not in STAGES:
            bad.append(f"{path}:{line}: imports atomnet.{target}, which has no stage")
        elif STAGES[target] > STAGES[own]:
            bad.append(f"{path}:{line}: {own} (stage {STAGES[own]}) imports {target} "
                       f"(stage {STAGES[target]})")
    return bad


def autograd_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for torch.autograd / torch.func use and ``.backward()`` calls.

    Subclassing ``torch.autograd.Function`` (a custom op) is not a call of autograd.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            text = ast.unparse(node)
            if text.startswith(("torch.autograd.", "torch.func.")) and \
                    text != "torch.autograd.Function":
                found.append((node.lineno, text))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(("torch.autograd", "torch.func", "functorch")):
                names = [a.name for a in node.names if a.name != "Function"]
                found += [(node.lineno, f"from {node.module} import {n}") for n in names]
            elif node.module == "torch":
                found += [(node.lineno, f"from torch import {a.name}") for a in node.names
                          if a.name in {"autograd", "func"}]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name.startswith(("torch.autograd", "torch.func", "functorch"))]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "backward":
            found.append((node.lineno, ".backward()"))
    return found


def autograd_violations(path: Path, source: str | None = None) -> list[str]:
    module = _module_name(path)
    own = module[1] if len(module) > 1 else "__init__"
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    bad = []
    for line, what in autograd_uses(tree):
        allowed = BACKWARD_ALLOWED if what == ".backward()" else AUTOGRAD_ALLOWED
        if own not in allowed:
            bad.append(f"{path}:{line}: {what} outside {sorted(allowed)}")
    return bad


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_stage():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in SOURCES}
    assert tops - set(STAGES) - FREE == set()


def test_imports_flow_one_way():
    bad = [v for path in SOURCES for v in import_violations(path)]
    assert not bad, "imports against ARCHITECTURE.md's flow:\n" + "\n".join(bad)


def test_only_derivatives_calls_autograd():
    bad = [v for path in SOURCES for v in autograd_violations(path)]
    assert not bad, "autograd outside atomnet/derivatives (contract 2):\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("where", "code", "n_bad"),
    [
        ("models/x.py", "from ..calculators import Calculator", 1),
        ("models/x.py", "from atomnet.derivatives import evaluate", 1),
        ("models/x.py", "from .. import keys\nfrom ..nn import ElementMLP", 0),
        ("structures/x.py", "from ..neighbors import neighbor_pairs", 0),
        ("neighbors/__init__.py", "from .edges import edge_vectors\nfrom ..io import load", 1),
        ("potential.py", "from .training import fit", 1),
        ("testing/x.py", "from ..cli import main", 0),
    ],
)
def test_import_checker_catches_back_imports(where, code, n_bad):
    assert len(import_violations(PACKAGE / where, code)) == n_bad


@pytest.mark.parametrize(
    ("where", "code", "n_bad"),
    [
        ("models/x.py", "import torch\ng = torch.autograd.grad(e, x)", 1),
        ("nn/x.py", "from torch.autograd import grad", 1),
        ("nn/x.py", "from torch import autograd", 1),
        ("nn/x.py", "import torch\nclass F(torch.autograd.Function): pass", 0),
        ("calculators/x.py", "loss.backward()", 1),
        ("training/x.py", "loss.backward()", 0),
        ("training/x.py", "import torch\ntorch.autograd.grad(e, x)", 1),
        ("derivatives/x.py", "import torch\ntorch.autograd.grad(e, x)", 0),
    ],
)
def test_autograd_checker_catches_calls(where, code, n_bad):
    assert len(autograd_violations(PACKAGE / where, code)) == n_bad
