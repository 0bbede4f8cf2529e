"""The layout's rules, checked: dependencies run one way (``worker`` → ``jobs``, never back).

``jobs/`` is the job model and the store; it must be usable (and testable) without the runtime, so
not even a type-checking import may point into ``worker/``.
"""

from __future__ import annotations

import ast
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
