"""The project's shape: no import circle among its modules, and the backend table is whole."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "steps", "scoring", "clients", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports() -> dict[str, set[str]]:
    """Every project module and the project modules it imports, at any depth in its code."""
    modules = {
        _module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "shims" not in p.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that starts and ends at one module), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_project_modules() -> None:
    graph = project_imports()
    assert "pipelines.local.workspace.publishing" in graph  # the walk found the project
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_backend_in_the_table_implements_the_protocol() -> None:
    from pipelines.backends import BACKENDS, Deployments, Schedules, load_backend

    for target in BACKENDS:
        backend = load_backend(target)
        assert callable(backend.publish)
        for protocol, part in ((Schedules, backend.schedules()), (Deployments, backend.deployments())):
            missing = [
                m for m in vars(protocol) if not m.startswith("_") and not callable(getattr(part, m, None))
            ]
            assert not missing, f"{target}: {type(part).__name__} lacks {missing}"


def test_an_unknown_target_is_a_user_error() -> None:
    from pipelines.backends import load_backend
    from pipelines.errors import UserError

    with pytest.raises(UserError, match="unknown target 'gcp'"):
        load_backend("gcp")
