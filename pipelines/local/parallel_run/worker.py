"""One ParallelRunStep worker process: import the entry script, call ``init()`` once, then ``run()`` per task.

Started by ``pipelines.local.parallel_run`` as a fresh interpreter (fork+exec, the same start method as
multiprocessing's ``spawn``: nothing of the parent, e.g. a loaded OpenMP runtime, is inherited). It
talks to the parent over two private pipes (JSON lines): tasks in, events out. The user's own
stdout/stderr go to the worker's log files. The worker reads its mini-batch itself and writes its
result rows to a per-mini-batch part file (temp file + rename), so no data travels through the pipes.

A ``run`` that takes a second argument, ``run(mini_batch, mini_batch_context)``, gets a
``MiniBatchContext``: ``partition_key_value`` (the mini-batch's partition_keys values, or None without
partition_keys), ``minibatch_index`` and ``dataset`` (None: no TabularDataset exists locally).
"""

from __future__ import annotations

import gc
import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from pipelines.local.runtime.step_host import preload, stdin_from_devnull

CONFIG_ENV = "AMLOPS_PRS_WORKER"
EXIT_BAD_SCRIPT = 3


class MiniBatchContext:
    """What ``run(mini_batch, mini_batch_context)`` learns about its mini-batch."""

    def __init__(self, partition_key_value: dict[str, str] | None, minibatch_index: int) -> None:
        self.partition_key_value = partition_key_value
        self.minibatch_index = minibatch_index
        self.dataset = None

    def __repr__(self) -> str:
        return f"MiniBatchContext({self.partition_key_value!r}, minibatch_index={self.minibatch_index})"


def takes_context(run: Any) -> bool:
    """Whether ``run`` needs a second positional argument (the mini-batch context).

    A second parameter with a default value (``run(mini_batch, scale=2.0)``) keeps its default.
    """
    try:
        params = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: call it with the mini-batch alone
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2:
        return positional[1].default is inspect.Parameter.empty
    return len(positional) == 1 and any(p.kind is p.VAR_POSITIONAL for p in params)


class _Channel:
    """JSON-lines events to the parent."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self._out.flush()


def main() -> int:
    """Worker entry point; configuration comes from the AMLOPS_PRS_WORKER environment variable."""
    config = json.loads(os.environ[CONFIG_ENV])
    tasks = os.fdopen(int(config["task_fd"]), "r", encoding="utf-8")
    channel = _Channel(int(config["result_fd"]))
    stdin_from_devnull()
    threads = int(config["threads"])
    try:
        import pyarrow as pa

        pa.set_cpu_count(threads)
    except ImportError:  # pragma: no cover - pyarrow is a pinned dependency
        pass

    preload(config.get("preload") or [])  # the entry script's libraries, while the model is laid out
    first = tasks.readline()  # the variables for Model.get_model_path, once the parent has them
    if not first:
        return 0
    os.environ.update(json.loads(first).get("env") or {})

    entry = Path(config["entry_script"])
    sys.path.insert(0, str(Path(config["source_dir"])))
    sys.argv = [str(entry), *config["arguments"]]
    try:
        module = _import_entry_script(entry)
    except Exception as exc:
        channel.send("bad_script", error=f"entry script {entry.name} failed to import: {_one_line(exc)}")
        traceback.print_exc()
        return EXIT_BAD_SCRIPT
    missing = [name for name in ("init", "run") if not callable(getattr(module, name, None))]
    if missing:
        channel.send(
            "bad_script",
            error=f"entry script {entry.name} has no {' and no '.join(f'{m}()' for m in missing)} function",
        )
        return EXIT_BAD_SCRIPT
    try:
        module.init()
    except BaseException as exc:  # SystemExit from argparse included: it is the user's init failing
        traceback.print_exc()
        channel.send(
            "init_failed", error=f"init() failed: {_one_line(exc)}", traceback=traceback.format_exc()
        )
        return EXIT_BAD_SCRIPT
    channel.send("ready", pid=os.getpid())

    staging = Path(config["staging_dir"])
    with_context = takes_context(module.run)
    for line in tasks:
        task = json.loads(line)
        if task.get("stop"):
            break
        _process(task, module, channel, staging, config, threads, with_context)
    _shutdown(module)
    gc.freeze()  # a quick exit: the collector need not walk every loaded object once more
    return 0


def _import_entry_script(path: Path) -> Any:
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _process(
    task: dict[str, Any],
    module: Any,
    channel: _Channel,
    staging: Path,
    config: dict,
    threads: int,
    with_context: bool = False,
) -> None:
    from pipelines.local.parallel_run.mini_batches import MiniBatch, read_tabular

    batch = MiniBatch.from_message(task)
    started = time.perf_counter()
    items = -1
    try:
        mini_batch = read_tabular(batch, threads) if batch.kind == "tabular" else list(batch.files)
        items = len(mini_batch)
        channel.send("start", id=batch.id, items=items)
        if with_context:
            partition = dict(batch.partition) if batch.partition else None
            result = module.run(mini_batch, MiniBatchContext(partition, batch.id))
        else:
            result = module.run(mini_batch)
        results, note = _count(result)
        if config["output_action"] == "append_row" and result is not None:
            _write_part(result, staging, batch.id, config["headered_output"])
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = traceback.format_exc()
        print(f"mini-batch {batch.id} ({batch.describe()}) failed:\n{tb}", file=sys.stderr, flush=True)
        channel.send(
            "done",
            id=batch.id,
            items=items,
            results=0,
            seconds=time.perf_counter() - started,
            error=_one_line(exc),
            traceback=tb,
        )
        return
    channel.send(
        "done",
        id=batch.id,
        items=items,
        results=results,
        seconds=time.perf_counter() - started,
        error=None,
        note=note,
    )


def _count(result: Any) -> tuple[int, str]:
    """How many items run() reports as processed (one element per successful item)."""
    if result is None:
        return 0, "run() returned None: counted as no item processed"
    try:
        return len(result), ""
    except TypeError:
        raise TypeError(
            f"run() returned a {type(result).__name__}; return a DataFrame or a list with one element per item"
        ) from None


def _write_part(result: Any, staging: Path, batch_id: int, headered: str) -> None:
    """Write one mini-batch's rows in Azure's append_row format (and optionally as Parquet), atomically."""
    import pandas as pd

    final = staging / f"mb-{batch_id:08d}.txt"
    tmp = staging / f".mb-{batch_id:08d}.{os.getpid()}.tmp"
    frame = result if isinstance(result, pd.DataFrame) else None
    with open(tmp, "wb") as out:
        if frame is not None:
            _write_frame_rows(frame, out)
        else:
            items = result.tolist() if hasattr(result, "tolist") else list(result)
            if items:
                out.write(("\n".join(str(item) for item in items) + "\n").encode("utf-8"))
    if headered:
        table_frame = frame if frame is not None else pd.DataFrame({"result": [str(i) for i in result]})
        _write_parquet_part(table_frame, staging / f"mb-{batch_id:08d}.parquet")
    os.replace(tmp, final)


def _write_frame_rows(frame: Any, out: Any) -> None:
    """DataFrame rows space-separated without header or index (quoted only where a value needs it)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if frame.empty:
        return
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        table = None
    if table is None or any(_needs_pandas(col) for col in table.columns):
        out.write(_floats_as_pyarrow_text(frame).to_csv(sep=" ", header=False, index=False).encode("utf-8"))
        return
    options = pacsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    pacsv.write_csv(table, out, write_options=options)


def _floats_as_pyarrow_text(frame: Any) -> Any:
    """``frame`` with its float columns as the text pyarrow's writer gives them (``770``, ``1e-7``; pandas would
    write ``770.0``, ``1e-07``), so one output file spells a number the same way whichever path wrote its rows."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    def as_text(column: Any) -> Any:
        text = pc.cast(pa.array(column, from_pandas=True), pa.string())
        return pd.Series(text.to_pylist(), index=column.index, dtype=object)

    return _text_columns(frame, pd.api.types.is_float_dtype, as_text)


def _objects_as_text(frame: Any) -> Any:
    """``frame`` with its object columns as text (missing values kept missing)."""
    import pandas as pd

    def missing(value: Any) -> bool:
        return value is None or value is pd.NA or (isinstance(value, float) and value != value)

    return _text_columns(
        frame, pd.api.types.is_object_dtype, lambda column: column.map(lambda v: v if missing(v) else str(v))
    )


def _text_columns(frame: Any, selected: Any, as_text: Any) -> Any:
    """``frame`` with each column whose dtype ``selected`` accepts replaced by ``as_text(column)``; a copy only
    if there is one."""
    out = frame
    for i, dtype in enumerate(frame.dtypes):
        if selected(dtype):
            if out is frame:
                out = frame.copy()
            out.isetitem(i, as_text(frame.iloc[:, i]))
    return out


def _needs_pandas(column: Any) -> bool:
    """Anything but numbers and plain strings (bools, dates, nested, strings needing quotes) goes via pandas."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return False
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return bool(pc.any(pc.match_substring_regex(column, r'[ "\n\r]')).as_py())
    return True


def _write_parquet_part(frame: Any, path: Path) -> None:
    """The mini-batch's rows with their header, for the headered file; what cannot be one table is noted
    beside it (``.error``) instead of failing a run() that succeeded: the append_row output is unaffected."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError):  # e.g. an object column mixing numbers and text
            table = pa.Table.from_pandas(_objects_as_text(frame), preserve_index=False)
        pq.write_table(table, tmp)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        path.with_name(path.name + ".error").write_text(f"mini-batch {path.stem}: {_one_line(exc)}\n")
        return
    os.replace(tmp, path)


def _shutdown(module: Any) -> None:
    """Call the entry script's optional ``shutdown()`` (Azure calls it when a worker stops)."""
    shutdown = getattr(module, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception:
            traceback.print_exc()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
