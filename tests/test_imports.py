"""Imports run one way (STYLE habit 13): `nnlab.models` knows nothing of tasks, of the run
pipeline or of the commands, and no nnlab module imports itself around a loop.

Both checks read every `import` and `from ... import` statement with `ast`, including the ones
inside functions: an import moved into a function body still makes the two modules depend on
each other, it only hides the cycle until that function runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "nnlab"
# The commands a user types: the modules behind pyproject.toml's scripts (one source of truth).
COMMANDS = sorted(
    {e.split(":")[0] for e in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].values()}
)
# What models/ may never import: everything that calls models, and the commands.
ABOVE_MODELS = ("nnlab.tasks", "nnlab.runs", "nnlab.commands", "nnlab.cli", "nnlab.engine.trainer", *COMMANDS)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODELS = sorted(m for m in MODULES if m.startswith("nnlab.models.") or m == "nnlab.models")


def type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`, which never run (annotations only)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body = [n for stmt in node.body for n in ast.walk(stmt)]
            guarded |= {id(n) for n in body if isinstance(n, ast.Import | ast.ImportFrom)}
    return guarded


def imports(module: str, runtime_only: bool = False) -> dict[str, int]:
    """The nnlab modules `module` imports -> the line of the first such import, at any depth
    (module level, functions, classes). `from nnlab.models import transfer` names the module
    `nnlab.models.transfer`; `from nnlab.errors import UserError` names `nnlab.errors`.
    `runtime_only` leaves out the imports under `if TYPE_CHECKING:`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    skip = type_checking_only(tree) if runtime_only else set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..engine import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # nnlab.models.transfer.Transfer -> nnlab.models.transfer
                target = target.rpartition(".")[0]
            if target and target != module:
                found.setdefault(target, node.lineno)
    return found


def is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in prefixes)


def test_the_scan_sees_the_package() -> None:
    """Guard against a check that passes because it looked at nothing."""
    assert "nnlab.models.transfer" in MODELS and "nnlab.commands.train" in COMMANDS
    assert "nnlab.errors" in imports("nnlab.models.transfer")
    # A function-level import counts: restore builds the model from inside `load_run`.
    assert "nnlab.runs.build" in imports("nnlab.runs.restore")


@pytest.mark.parametrize("module", MODELS)
def test_models_import_nothing_above_them(module: str) -> None:
    """Every import statement in models/, at any depth (type-only ones too)."""
    above = {target: line for target, line in imports(module).items() if is_under(target, ABOVE_MODELS)}
    assert not above, f"{module} imports {', '.join(f'{t} (line {n})' for t, n in sorted(above.items()))}"


def test_importing_every_model_loads_nothing_above_models(tmp_path: Path) -> None:
    """What actually runs: a fresh interpreter imports every module under models/."""
    probe = (
        f"import importlib, json, sys\nfor m in {MODELS!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(MODELS) <= set(loaded)
    assert not [m for m in loaded if is_under(m, ABOVE_MODELS)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_are_found() -> None:
    """The detector itself, on a graph with one loop of three and a module outside it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_nnlab_modules() -> None:
    """Every import that runs (module or function level) goes one way. Imports under
    `if TYPE_CHECKING:` are left out: they only name a type for an annotation and never run."""
    graph = {m: set(imports(m, runtime_only=True)) for m in MODULES}
    found = cycles(graph)
    detail = [
        f"{' <-> '.join(c)}: " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c))) for c in found
    ]
    assert not found, "import cycles:\n" + "\n".join(detail)
