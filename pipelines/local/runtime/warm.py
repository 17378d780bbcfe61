"""Warm hosts for PythonScriptSteps: start the next step's interpreter while the current step runs.

The engine starts ``step_host.py`` for a script step ahead of time; the host imports the libraries
the script itself imports (found by reading the script and the modules of its own folder it
imports, limited to ``PRELOADABLE``) and waits. When the step's turn comes the host runs the script
as ``python SCRIPT ARGS`` would. A script that changes ``os.environ`` gets a cold interpreter, since
a library imported early would not see the change; ``AMLOPS_WARM_STEPS=0`` turns warm hosts off.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines.processes import kill_group

PRELOADABLE = frozenset({"numpy", "pandas", "pyarrow", "scipy", "sklearn", "mlflow", "cloudpickle"})
# MLflow's SQLite stores: a script imports them on its first tracking or registry call (most of a second)
SQLITE_STORES = ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store")
HOST_SCRIPT = Path(__file__).resolve().with_name("step_host.py")


def enabled() -> bool:
    return os.environ.get("AMLOPS_WARM_STEPS", "1") != "0"


def preload_modules(script: Path) -> list[str] | None:
    """Libraries ``script`` imports, directly or through modules of its folder; None: run it cold."""
    folder = script.parent
    modules: list[str] = []
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            return None
        for node in ast.walk(tree):
            if _writes_environ(node):
                return None
            for name in _imported(node):
                top = name.split(".")[0]
                if (folder / f"{top}.py").is_file():
                    todo.append(folder / f"{top}.py")
                elif (folder / top).is_dir():  # a package of the script's own folder: not preloaded
                    continue
                elif top in PRELOADABLE and name not in modules:
                    modules.append(name)
    return modules


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # "from sklearn import metrics" may name a submodule: the host tries it and skips names
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _is_environ(expr: ast.AST) -> bool:
    return (isinstance(expr, ast.Attribute) and expr.attr == "environ") or (
        isinstance(expr, ast.Name) and expr.id == "environ"
    )


def _writes_environ(node: ast.AST) -> bool:
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        return any(isinstance(t, ast.Subscript) and _is_environ(t.value) for t in targets)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        func = node.func
        if func.attr in ("putenv", "unsetenv"):
            return True
        return func.attr in ("update", "setdefault", "pop", "popitem", "clear") and _is_environ(func.value)
    return False


def _store_modules(modules: list[str], env: dict[str, str]) -> list[str]:
    """MLflow's SQLite stores, for a script that uses MLflow where the engine points it at a SQLite store."""
    uses_mlflow = any(m.split(".")[0] == "mlflow" for m in modules)
    if uses_mlflow and env.get("MLFLOW_TRACKING_URI", "").startswith("sqlite:"):
        return [m for m in SQLITE_STORES if m not in modules]
    return []


class WarmHost:
    """One interpreter, started ahead, importing a step script's libraries; launch() runs the step."""

    def __init__(self, modules: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.env = env
        self.modules = modules
        self.proc = subprocess.Popen(
            [sys.executable, str(HOST_SCRIPT), json.dumps(modules)], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, bufsize=1,
        )  # fmt: skip

    @classmethod
    def for_script(cls, script: Path, env: dict[str, str]) -> WarmHost | None:
        """A host started for ``script``, or None when warm hosts are off or the script must run cold."""
        if not enabled():
            return None
        modules = preload_modules(script)
        if modules is None:
            return None
        return cls(modules + _store_modules(modules, env), script.parent, env)

    def launch(self, argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen | None:
        """Run ``argv`` (script and arguments) in this host; None if it cannot (start one cold)."""
        startup = {k for k in set(env) | set(self.env) if k.startswith("PYTHON")}
        if self.proc.poll() is not None or any(env.get(k) != self.env.get(k) for k in startup):
            self.discard()
            return None
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env}) + "\n")
            self.proc.stdin.close()
            self.proc.stdin = None  # a Popen like any other from here on: communicate() works
        except OSError:
            self.discard()
            return None
        return self.proc

    def discard(self) -> None:
        """Stop the host if its step will not run in it."""
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
