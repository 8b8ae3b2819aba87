"""The package's import graph: a strict stack of layers, no circle, and a core that never loads the zoo.

Layers, bottom to top (``docs/architecture.md``)::

    errors, files → lang, highlight, formatter → schedules, models → compiler → samplers → truth, metrics, plot
    → zoo → run, outputs, bench, repl, notebook → cli

A module may import its own layer and the layers below it, never one above (not even inside a
function). The zoo registers its models with the registry when an unknown name is first looked
up (the registry names it as data, not as an import), so the core runs without it
(``tests/test_registry.py`` checks that in a fresh process).
"""

from __future__ import annotations

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "rrrdsl"

#: top-level part of ``rrrdsl`` -> its rank in the stack
RANKS = {
    "errors": 0,
    "files": 0,
    "lang": 1,
    "highlight": 1,
    "formatter": 1,
    "schedules": 2,
    "models": 2,
    "compiler": 3,
    "samplers": 4,
    "truth": 5,
    "metrics": 5,
    "plot": 5,
    "zoo": 6,
    "run": 7,
    "loads": 7,
    "outputs": 7,
    "bench": 7,
    "repl": 7,
    "notebook": 7,
    "cli": 8,
    "__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every ``rrrdsl`` import in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from . import truth` imports the module rrrdsl.truth
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "rrrdsl" or target.startswith("rrrdsl."):
                found.append((target, node.lineno, id(node) in top_level))
    return found


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _modules()} - {None}
    assert parts <= set(RANKS), f"give these a layer in RANKS and docs/architecture.md: {sorted(parts - set(RANKS))}"


def test_no_import_reaches_up_the_stack():
    upward = []
    for module, path in _modules().items():
        here = _part(module)
        if here is None:
            continue
        for target, line, _ in _imports(path):
            there = _part(target)
            if there in RANKS and RANKS[there] > RANKS[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of ``graph`` (depth-first search with an explicit stack), or None."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if root in state:
            continue
        state[root] = 1
        path, stack = [root], [iter(sorted(graph[root]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _module_graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, _, at_top in _imports(path):
            if top_level_only and not at_top:
                continue
            # `from .x import name` names module x, or a name defined in x
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def test_no_circle_between_the_parts():
    """Counting every import, even one inside a function: the parts form a stack, no circle."""
    parts: dict[str, set[str]] = {}
    for module, targets in _module_graph(top_level_only=False).items():
        here = _part(module)
        parts.setdefault(here, set()).update(_part(t) for t in targets if _part(t) not in (here, None))
    circle = _find_circle({k: v for k, v in parts.items() if k is not None})
    assert circle is None, "import circle between parts: " + " -> ".join(circle or [])


def test_no_import_time_circle_between_modules():
    """Module-level imports have no circle. Inside one part a module may import a sibling at
    call time (an IR node's ``*`` calls the algebra that builds nodes), never at import time."""
    circle = _find_circle(_module_graph(top_level_only=True))
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_no_module_is_longer_than_450_lines():
    """One job per module: a module that outgrows a screenful of screens is split along its jobs."""
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"split these modules: {long}"
