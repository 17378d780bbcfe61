"""A warm interpreter for one PythonScriptStep: import the step's heavy libraries early, then run it.

Starting Python and importing pandas, scikit-learn and MLflow costs several seconds per step, and so
does tearing the interpreter down again (the garbage collector walks every imported object on the
way out). The engine starts this host for a step while the previous step is still running:

    python step_host.py '["pandas", "mlflow"]'      # imports those, then waits on stdin

and, when the step's turn comes, writes one JSON line ``{"argv": [...], "cwd": ..., "env": {...}}``.
The host then behaves as ``python SCRIPT ARGS...`` started in ``cwd`` with ``env`` would: the script
runs as ``__main__`` with its own directory first on ``sys.path``, stdin is /dev/null, an uncaught
exception prints its traceback (from the script's frames) and exits 1, ``sys.exit(n)`` exits ``n``.

This file imports only the standard library, so a step never sees this project's packages.
"""

from __future__ import annotations

import builtins
import gc
import importlib
import importlib.machinery
import io
import json
import os
import sys
import types


def preload(modules: list[str]) -> None:
    """Import these modules now (a name that is not a module is skipped), then freeze the GC."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the script will report its own import errors
            continue
    # objects alive now are the libraries' own: keep the collector from walking them again
    gc.freeze()


def stdin_from_devnull() -> None:
    """Make fd 0 /dev/null, as for a job started without a terminal."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def run_job(job: dict) -> int:
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    stdin_from_devnull()
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 lives as long as the process
    argv = list(job["argv"])
    script = os.path.abspath(argv[0])
    sys.argv = argv
    sys.path.insert(0, os.path.dirname(script))
    # __main__ as the interpreter makes it for a script: absolute __file__, argv[0] as given
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(
        __file__=script,
        __cached__=None,
        __package__=None,
        __spec__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", script),
        __builtins__=builtins,
    )
    sys.modules["__main__"] = main_module
    try:
        with io.open_code(script) as fh:
            source = fh.read()
    except OSError as exc:
        print(
            f"{sys.executable}: can't open file {script!r}: [Errno {exc.errno}] {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    try:
        exec(compile(source, script, "exec"), main_module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported as the interpreter would
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        tb = tb or exc.__traceback__
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1
    finally:
        gc.freeze()  # a fast exit: the collector need not walk the step's objects once more
    return 0


def main() -> int:
    del sys.path[0]  # this folder: its modules must not shadow a library's during preload
    preload(json.loads(sys.argv[1]) if len(sys.argv) > 1 else [])
    line = sys.stdin.readline()
    if not line.strip():  # the engine went away or did not need this host
        os._exit(0)
    return run_job(json.loads(line))


if __name__ == "__main__":
    sys.exit(main())
