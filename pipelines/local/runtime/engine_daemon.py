"""A warm local engine: MLflow and the engine imported once, each later ``run`` a fresh fork of it.

A ``run`` command's fixed cost is mostly importing MLflow and its SQLite store in the engine process
(about two seconds of one core). After a run, the command leaves this daemon behind (detached, its
own session, no terminal). It imports what the engine host imports, then waits on a Unix socket in a
folder of this user's (``$XDG_RUNTIME_DIR`` or the temporary folder, ``amlops-UID/``, 0700; socket 0600;
callers of another user refused; lock and log in ``AMLOPS_HOME/engine/``) and exits by itself
after ``AMLOPS_ENGINE_IDLE`` seconds (default 600) without a run. The next ``run`` command connects,
hands over its terminal (the file descriptors of its stdin, stdout and stderr), environment, working
folder and ``RunRequest``; the daemon forks, and the child runs the request exactly as the engine host
would, in the command's environment and folder, writing to the command's terminal.

The socket's name is a fingerprint of the interpreter, the project's source and the ``MLFLOW_*``
variables, so changed code or settings that modules read when imported get a new daemon, never a stale
one. The command forwards SIGTERM and Ctrl-C to the child; a child whose command dies cancels its run
(the socket closes), so no run is left "Running". Anything that stops the hand-over before the child
starts (no daemon, an old one exiting, a refused connection) falls back to a cold engine host.
``AMLOPS_ENGINE_DAEMON=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import io
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pipelines.settings import PROJECT_ROOT, amlops_home

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux
HEADER = struct.Struct("!Q")


def project_env() -> dict[str, str]:
    """This environment with the project first on ``PYTHONPATH``: for the interpreters that run its modules."""
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def enabled() -> bool:
    return (
        os.environ.get("AMLOPS_ENGINE_DAEMON", "1") != "0"
        and hasattr(socket, "AF_UNIX")
        and hasattr(socket, "send_fds")
        and hasattr(os, "fork")
    )


def idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("AMLOPS_ENGINE_IDLE", "600")))
    except ValueError:
        return 600.0


def fingerprint() -> str:
    """Interpreter, project source (path, size, mtime) and the MLFLOW_* variables."""
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}".encode())
    for file in sorted((PROJECT_ROOT / "pipelines").rglob("*.py")):
        stat = file.stat()
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    digest.update(repr(sorted((k, v) for k, v in os.environ.items() if k.startswith("MLFLOW_"))).encode())
    return digest.hexdigest()[:16]


def folder() -> Path:
    """``AMLOPS_HOME/engine``: the daemon's lock and log (0700)."""
    path = amlops_home() / "engine"
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def socket_path(key: str | None = None) -> Path | None:
    """Where this workspace's daemon of this code listens: a short name (a Unix socket's path is limited
    to about 100 bytes) in a folder of this user's alone; None if that folder is not safely ours."""
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"amlops-{os.getuid()}"
    try:
        runtime.mkdir(mode=0o700, exist_ok=True)
        stat = runtime.stat()
    except OSError:
        return None
    if stat.st_uid != os.getuid() or stat.st_mode & 0o077:
        return None  # someone else made it, or others may enter it
    name = hashlib.sha256(f"{amlops_home()}\0{key or fingerprint()}".encode()).hexdigest()[:24]
    path = runtime / f"{name}.sock"
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH else None


# ---- the command's side -------------------------------------------------------------------------


class WarmEngine:
    """A connection to a daemon: ``run`` hands it the request and waits, as ``EngineHost.run`` does."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.child: int | None = None
        self.pending = b""

    @classmethod
    def connect(cls) -> WarmEngine | None:
        path = socket_path() if enabled() else None
        if path is None:
            return None
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(2)
            conn.connect(str(path))
            conn.settimeout(None)
        except OSError:
            conn.close()
            return None
        return cls(conn)

    def start(self, request: Any, to_stderr: bool) -> bool:
        """Hand the request over; False if the daemon did not start a child for it (run it cold)."""
        message = pickle.dumps(
            {"request": request, "to_stderr": to_stderr, "env": dict(os.environ), "cwd": os.getcwd()}
        )
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            socket.send_fds(self.conn, [HEADER.pack(len(message))], [0, 1, 2])
            self.conn.sendall(message)
            line = self._line()
        except OSError:
            line = ""
        if not line.startswith("PID "):
            self.close()
            return False
        self.child = int(line.split()[1])
        return True

    def wait(self) -> int:
        """The child's exit status (1 if it vanished without one); signals are forwarded meanwhile."""
        from pipelines.local.runtime.engine import in_main_thread

        handlers = {}
        if in_main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                handlers[signum] = signal.signal(signum, self._forward)
        try:
            while True:
                try:
                    line = self._line()
                    break
                except InterruptedError:
                    continue
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self.close()
        return int(line.split()[1]) if line.startswith("EXIT ") else 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()

    def _line(self) -> str:
        """The daemon's next line ("PID n", "EXIT n"); what arrived after it is kept for the next call."""
        while b"\n" not in self.pending:
            chunk = self.conn.recv(64)
            if not chunk:
                break
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode(errors="replace").strip()

    def _forward(self, signum: int, frame: Any) -> None:
        if self.child is not None:
            with contextlib.suppress(OSError):
                os.kill(self.child, signum)


def start_detached() -> None:
    """Leave a daemon for the next run (no-op when off, or when this code's daemon already runs)."""
    path = socket_path() if enabled() else None
    if path is None:
        return  # (a daemon already serving exits at once: it cannot take the lock; a stale socket is replaced)
    with open(os.devnull, "r+b") as null:
        subprocess.Popen(
            [sys.executable, "-m", "pipelines.local.runtime.engine_daemon"],
            stdin=null, stdout=null, stderr=null, cwd=PROJECT_ROOT, start_new_session=True,
            env=project_env(),
        )  # fmt: skip


# ---- the daemon ---------------------------------------------------------------------------------


def serve() -> int:
    key = fingerprint()
    path = socket_path(key)
    if path is None:
        return 0
    lock = open(folder() / f"{path.stem}.lock", "a+")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # this code's daemon already runs
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    import mlflow  # noqa: F401 - what the engine host imports, once
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    from pipelines.local.runtime import engine  # noqa: F401

    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a daemon that died without tidying up
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    listener.listen(16)
    signal.signal(signal.SIGTERM, _stop)  # leave through the finally below: no stale socket behind
    gc.freeze()
    log = _log(folder() / "daemon.log")
    log(f"daemon {os.getpid()} serving {path.name}")
    idle, last = idle_seconds(), time.monotonic()
    listener.settimeout(1.0)
    try:
        while time.monotonic() - last < idle and path.exists():
            _reap()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            _handle(conn, listener, log)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener.close()
        log(f"daemon {os.getpid()} stopped")
    return 0


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _handle(conn: socket.socket, listener: socket.socket, log: Any) -> None:
    fds: list[int] = []
    try:
        conn.settimeout(10)
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            log(f"refused a caller of uid {uid} (pid {pid})")
            return
        head, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        if len(fds) != 3 or len(head) != HEADER.size:
            raise ValueError("no terminal was handed over")
        (size,) = HEADER.unpack(head)
        data = b""
        while len(data) < size:
            chunk = conn.recv(min(1 << 20, size - len(data)))
            if not chunk:
                raise ValueError("the request ended early")
            data += chunk
        message = pickle.loads(data)
        conn.settimeout(None)
        child = os.fork()
        if child == 0:
            listener.close()
            _child(conn, fds, message)  # never returns
        log(f"run {message['request'].run_id} in process {child}")
    except (OSError, ValueError, struct.error, pickle.UnpicklingError) as exc:
        log(f"hand-over failed: {exc}")
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


def _child(conn: socket.socket, fds: list[int], message: dict[str, Any]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False))  # noqa: SIM115
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True)  # noqa: SIM115
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), write_through=True)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(message["env"])
        os.chdir(message["cwd"])
        conn.sendall(f"PID {os.getpid()}\n".encode())
        threading.Thread(target=_cancel_when_caller_leaves, args=(conn,), daemon=True).start()
        from pipelines.local.runtime import engine

        out = sys.stderr if message["to_stderr"] else sys.stdout
        engine.run_plan(message["request"], out=out)
        code = 0
    except BaseException:  # noqa: BLE001 - reported on the caller's terminal, then the exit status says it
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(f"EXIT {code}\n".encode())
        os._exit(code)


def _cancel_when_caller_leaves(conn: socket.socket) -> None:
    """The command sends nothing more: an end of stream means it died, so cancel as SIGTERM would."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _log(path: Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stream = os.fdopen(fd, "a", buffering=1)

    def log(text: str) -> None:
        stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")

    return log


if __name__ == "__main__":
    code = serve()
    os._exit(code)
