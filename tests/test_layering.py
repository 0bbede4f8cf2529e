"""The layout's rules, checked: dependencies run one way (``worker`` → ``jobs``, never back), and
no modules import each other in a circle.

``jobs/`` is the job model and the store; it must be usable (and testable) without the runtime, so
not even a type-checking import may point into ``worker/``. Imports made inside functions count
too: a cycle hidden in a lazy import is still a cycle for whoever reads or moves the code.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function bodies and ``TYPE_CHECKING`` blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _reaching_into(paths: list[Path], package: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name} imports {module}"
        for path in paths
        for module in sorted(_imports_of(path))
        if module == package or module.startswith(package + ".")
    ]


def test_jobs_imports_nothing_from_worker() -> None:
    paths = sorted((ROOT / "jobs").rglob("*.py"))
    assert paths, "no modules found under jobs/"
    assert _reaching_into(paths, "worker") == []


def test_the_check_sees_an_import_into_worker(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nimport workers\nif TYPE_CHECKING:\n"
        "    from worker.config import Config\n"
        "def f():\n    import worker\n"
    )
    assert _reaching_into([module], "worker") == ["m.py imports worker", "m.py imports worker.config"]


def _module_names() -> dict[str, Path]:
    found = {}
    for package in ("jobs", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _first_party_graph() -> dict[str, set[str]]:
    """Module → the first-party modules it imports (``from a import b`` counts ``a.b`` when that is a
    module, else ``a``)."""
    modules = _module_names()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            edges.update(found for target in targets if (found := owner(target)) is not None)
        graph[name] = edges - {name}
    return graph


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_cycle() -> None:
    graph = _first_party_graph()
    assert "jobs.store" in graph and "worker.pool" in graph
    assert _cycles(graph) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
