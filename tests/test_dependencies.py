"""Every import is declared: runtime code imports only runtime dependencies, tests and benchmarks only
declared dev ones.

A package that arrives only as someone else's dependency (``httpx2`` came with ``anthropic``) can
vanish or change under us on the next release; declaring it makes its range ours. This is the check
``deptry`` makes, in thirty lines and without another tool in the lock.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = frozenset({"worker", "jobs", "tests", "bench"})
PEERS = ROOT / "bench" / "peers"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_canonical(re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]) for req in requirements}


def _declared() -> tuple[set[str], set[str]]:
    """(runtime, everything): the runtime set includes the postgres extra, which the store imports."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    runtime = _requirement_names(project["dependencies"]) | _requirement_names(extras["postgres"])
    everything = runtime | {name for reqs in extras.values() for name in _requirement_names(reqs)}
    return runtime, everything


def _imported_top_levels(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - FIRST_PARTY - set(sys.stdlib_module_names)


def _undeclared(paths: list[Path], declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for path in paths:
        for module in sorted(_imported_top_levels(path)):
            owners = {_canonical(d) for d in distributions.get(module, [module])}
            if not owners & declared:
                problems.append(f"{path.name}: imports {module} (from {', '.join(sorted(owners))})")
    return problems


@pytest.mark.parametrize(("folders", "scope"), [(("worker", "jobs"), "runtime"), (("tests", "bench"), "dev")])
def test_every_import_is_a_declared_dependency(folders: tuple[str, ...], scope: str) -> None:
    runtime, everything = _declared()
    declared = runtime if scope == "runtime" else everything
    paths = [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]
    paths = [path for path in paths if PEERS not in path.parents]  # run in their own environment
    assert _undeclared(paths, declared) == [], f"declare these in pyproject.toml ({scope})"


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    """The check itself can fail: a module importing something undeclared is reported."""
    module = tmp_path / "m.py"
    module.write_text("import anyio\nimport httpx2\nfrom jobs import models\nimport json\n")
    assert _imported_top_levels(module) == {"anyio", "httpx2"}
    assert _undeclared([module], {"anyio"}) == ["m.py: imports httpx2 (from httpx2)"]
    assert _undeclared([module], {"anyio", "httpx2"}) == []
