"""The package's shape: no import cycle between its modules, and no module too long to read.

Imports are read with `ast`, not by importing, so a cycle that only a lazy (in-function) import
closes counts too: it is the same knot, only hidden from the interpreter.
"""

from __future__ import annotations

import ast
import pathlib

from tests.conftest import ROOT

PACKAGE = ROOT / "operator" / "gemma_operator"
MAX_LINES = 600


def _name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from . import capacity` names a module; `from .inventory import Pool` a name in one.
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin for alias in node.names]
        else:
            continue
        for target in targets:
            # Importing a.b.c runs the packages a.b and a.b.c's own code.
            parts = target.split(".")
            for end in range(2, len(parts) + 1):
                module = ".".join(parts[:end])
                if module in modules and module != name:
                    found.add(module)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_real_imports():
    # Guards the parser: a graph with no edges would have no cycle either.
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "gemma_operator.inventory" in graph["gemma_operator.capacity"]
    assert "gemma_operator.planner" in graph["gemma_operator.runtimes.vllm"]
    assert "gemma_operator.runtimes" in graph["gemma_operator.runtimes.vllm"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_no_module_over_600_lines():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert too_long == {}


# issue 20: the kopf shell is registration only (indices, events -> the work queue); what it grows
# beyond that belongs in queue, resync, execute or tuning.
HANDLERS_MAX_LINES = 250


def test_handlers_stay_a_thin_shell():
    modules = _modules()
    lines = len(modules["gemma_operator.handlers"].read_text(encoding="utf-8").splitlines())
    assert lines <= HANDLERS_MAX_LINES


# Where memo attributes may be bound: kopf's start-up (handlers.login/startup and queue.prepare,
# which it calls). kopf hands each object's handlers a shallow copy of memo made when it first
# sees the object, so an attribute rebound later is never seen by the event handlers of objects
# seen before (tests/integration/test_shared_state.py): renew operator-wide state in place.
MEMO_BINDERS = {("handlers", "login"), ("handlers", "startup"), ("queue", "prepare")}


def test_memo_attributes_are_bound_only_at_start_up():
    rebound = []
    for name, path in _modules().items():
        module = name.rpartition(".")[2]
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])  # fmt: skip
                for target in targets:
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and target.value.id == "memo" and (module, function.name) not in MEMO_BINDERS):  # fmt: skip
                        rebound.append(f"{name}.{function.name}: memo.{target.attr} (line {node.lineno})")
    assert not rebound, rebound
