"""The lock protocol for a local deployment's state: who may change it, and who may write its runtime record.

- **One operation per service at a time.** deploy, start, stop, delete, update and the workspace
  service's reviver each hold the service's lock (``deployments/.locks/<name>.lock``, an ``flock``
  the kernel releases when its holder dies) from their first look at the record to their last write,
  so none of them acts on a state another is changing. A command waits for the operation before it
  (saying which); the reviver never waits, it tries again on its next round.
- **Only the current supervisor writes the runtime record.** Each launch gets a token; the supervisor
  writes ``runtime.json`` only while the record still carries its token. ``stop`` takes the token away
  before it signals the supervisor, so a dying supervisor can neither undo what stop records nor bring
  back the folder of a deleted service. Every read-modify-write of ``runtime.json`` holds a second,
  short lock (``<name>.runtime``), so the supervisor's and a command's updates never overwrite each other.

The locks live beside the service folders, not in them: a command waiting on a service that is
deleted meanwhile still gets the lock, finds no record, and says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.atomic_files import write_json  # noqa: F401 - deployments write through it
from pipelines.errors import UserError

LOCK_WAIT_SECONDS = 600.0
POLL_SECONDS = 0.1


class ServiceBusy(UserError):
    """Another operation holds the service's lock (and did not let go in time)."""


def locks_dir(deployments: Path) -> Path:
    folder = deployments / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def service_lock(
    deployments: Path, name: str, operation: str, wait: float = LOCK_WAIT_SECONDS
) -> Iterator[None]:
    """Hold service ``name``'s lock for ``operation``; wait up to ``wait`` seconds for it, then ServiceBusy."""
    path = locks_dir(deployments) / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise ServiceBusy(
                        f"service {name!r} is busy: {holder}",
                        hint="try again when that has finished",
                    ) from None
                if not told:
                    print(f"waiting for {holder} on {name} to finish...", file=sys.stderr, flush=True)
                    told = True
                time.sleep(POLL_SECONDS)
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "operation": operation, "since": stamp}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it: "stop (pid 123, since ...)"."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        info = {}
    if not info:
        return "another operation"
    return f"{info.get('operation', 'another operation')} (pid {info.get('pid')}, since {info.get('since')})"


@contextlib.contextmanager
def _runtime_lock(folder: Path) -> Iterator[None]:
    with open(locks_dir(folder.parent) / f"{folder.name}.runtime", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}


def merge_runtime(folder: Path, owner: str | None = None, **fields: Any) -> bool:
    """Update fields of ``folder/runtime.json``; False (and nothing written) if the folder is gone, or if
    ``owner`` is given and the record no longer carries that launch token."""
    with _runtime_lock(folder):
        if not folder.is_dir():
            return False
        data = read_json(folder / "runtime.json")
        if owner is not None and data.get("launch") != owner:
            return False
        data.update(fields)
        write_json(folder / "runtime.json", data)
        return True


def replace_runtime(folder: Path, data: dict[str, Any]) -> None:
    """Replace ``folder/runtime.json`` as a whole (a new launch; the caller holds the service lock)."""
    with _runtime_lock(folder):
        write_json(folder / "runtime.json", data)


def revoke_launch(folder: Path, **fields: Any) -> dict[str, Any]:
    """Take the launch token away (the supervisor may write no more) and set ``fields``; the record before."""
    with _runtime_lock(folder):
        before = read_json(folder / "runtime.json")
        if folder.is_dir():
            write_json(folder / "runtime.json", {**before, **fields, "launch": None})
        return before
