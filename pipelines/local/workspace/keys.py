"""Primary/secondary keys for local endpoints (published pipelines, deployments).

Keys are generated with ``secrets``, kept in one JSON file per owner with 0600 permissions (written
atomically, so a crash never leaves a half-written key file), compared in constant time, and never
logged: only a short fingerprint (sha256 prefix) may appear in logs.

``keep_keys_out_of_logs`` is the one place that makes sure of the last, in the processes that answer
requests (the workspace service, each deployment's workers): every log record they make, whichever
library makes it (uvicorn's and gunicorn's access logs, the inference server's request lines), has the
values of URL query strings hidden and every key of the workspace replaced, wherever a caller put it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pipelines.atomic_files import write_json
from pipelines.errors import UserError

KEY_NAMES = ("primary", "secondary")


class KeyStore:
    """The keys of one owner (e.g. the workspace service or one deployment), in ``path``."""

    def __init__(self, path: Path, regen_command: str = "the keys command with --regen primary") -> None:
        self.path = Path(path)
        self.regen_command = regen_command

    def keys(self) -> dict[str, str]:
        """Both keys, generating them on first use; UserError if the file is damaged."""
        if not self.path.is_file():
            return self._write({name: _new_key() for name in KEY_NAMES})
        try:
            data = json.loads(self.path.read_bytes())
        except ValueError:  # not JSON, or not text
            data = None
        if not (isinstance(data, dict) and all(isinstance(data.get(n), str) and data[n] for n in KEY_NAMES)):
            raise UserError(
                f"key file {self.path} is damaged, so no key is accepted",
                hint=f"make new keys, which replaces both: {self.regen_command}",
            )
        return {n: data[n] for n in KEY_NAMES}

    def regenerate(self, which: str) -> dict[str, str]:
        """A new ``primary`` or ``secondary`` key; the old one stops working at once.

        If the key file is damaged, both keys are new (the other one cannot be read back).
        """
        if which not in KEY_NAMES:
            raise UserError(f"unknown key {which!r}", hint="use primary or secondary")
        try:
            keys = self.keys()
        except UserError:
            keys = {n: _new_key() for n in KEY_NAMES}
        keys[which] = _new_key()
        return self._write(keys)

    def check(self, presented: str | None) -> bool:
        """True if ``presented`` equals either key (constant-time comparison against both)."""
        if not presented:
            return False
        keys = self.keys()
        ok = False
        for name in KEY_NAMES:
            ok |= hmac.compare_digest(presented.encode(), keys[name].encode())
        return ok

    def check_authorization_header(self, header: str | None) -> bool:
        """True for ``Authorization: Bearer <key>`` with a valid key."""
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and self.check(token.strip())

    def _write(self, keys: dict[str, str]) -> dict[str, str]:
        write_json(self.path, keys, indent=None, mode=0o600)
        return dict(keys)


def fingerprint(key: str) -> str:
    """A loggable identifier for a key: never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _new_key() -> str:
    """32 random bytes, URL-safe; never starting with '-', which command lines would take for an option."""
    while (key := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return key


# ---- keeping keys out of logs --------------------------------------------------------------------------------
HIDDEN = "[hidden]"
_KEY_LIKE = re.compile(r"[A-Za-z0-9_-]{16,}")  # what every generated key is (43 characters)
_QUERY_VALUE = re.compile(r"(?<=[?&])([^=&?#\s\"']{1,200})=[^&#\s\"']*")


def workspace_key_files(home: Path) -> list[Path]:
    """Every key file of the workspace in ``home``: the service's and each deployment's."""
    deployments = Path(home) / "deployments"
    found = [Path(home) / "service" / "keys.json"]
    if deployments.is_dir():
        found += sorted(deployments.glob("*/keys.json"))
    return found


class LogRedactor:
    """Hides query-string values and the keys found in ``key_files()`` in a text.

    A key file is read again as soon as it changes (a regenerated key is hidden from its first use); the list of
    key files is asked for again at most every ``relist_seconds`` (a new deployment's keys within that time).
    A text with no run of 16 key characters cannot hold a generated key: while every key is such a run, it is
    passed without looking at the key files (at most ``relist_seconds`` since they were last looked at)."""

    def __init__(self, key_files: Callable[[], Iterable[Path]], relist_seconds: float = 1.0) -> None:
        self.key_files = key_files
        self.relist_seconds = relist_seconds
        self._files: list[Path] = []
        self._listed = float("-inf")
        self._seen: dict[Path, tuple[tuple[int, int, int], list[str]]] = {}
        self._lock = threading.Lock()
        self._all_key_like = False
        self._checked = float("-inf")

    def redact(self, text: str) -> str:
        if "=" in text and ("?" in text or "&" in text):
            text = _QUERY_VALUE.sub(rf"\1={HIDDEN}", text)
        recent = time.monotonic() - self._checked < self.relist_seconds
        if recent and self._all_key_like and not _KEY_LIKE.search(text):
            return text
        for key in self.keys():
            if key in text:
                text = text.replace(key, f"[key {fingerprint(key)}]")
        return text

    def keys(self) -> list[str]:
        """The current keys of every key file (a damaged or missing file has none)."""
        out: list[str] = []
        with self._lock:
            if time.monotonic() - self._listed > self.relist_seconds:
                self._files, self._listed = list(self.key_files()), time.monotonic()
            for path in self._files:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
                seen = self._seen.get(path)
                if seen is None or seen[0] != stamp:
                    seen = (stamp, _read_keys(path))
                    self._seen[path] = seen
                out += seen[1]
            self._all_key_like = all(_KEY_LIKE.fullmatch(key) for key in out)
            self._checked = time.monotonic()
        return out

    def record(self, record: logging.LogRecord) -> logging.LogRecord:
        """``record`` with its message, arguments and exception text redacted (formatters still work)."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format: logging reports it itself, with this record
            return record
        clean = self.redact(message)
        if clean != message and not record.args:
            record.msg, record.args = clean, None
        elif clean != message:
            if isinstance(record.msg, str):
                record.msg = self.redact(record.msg)
            if isinstance(record.args, tuple):  # uvicorn's access formatter unpacks these
                record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
            elif isinstance(record.args, dict):  # gunicorn's access log formats with a mapping
                record.args = {k: self.redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
            try:
                formatted = record.getMessage()
                still = self.redact(formatted) != formatted
            except Exception:
                still = True
            if still:  # a key inside an argument of another type: give up the arguments
                record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return record


_installed: LogRedactor | None = None


def keep_keys_out_of_logs(key_files: Callable[[], Iterable[Path]]) -> LogRedactor:
    """From now on, every log record of this process goes through a LogRedactor for ``key_files``.

    It sits in the log-record factory, so it applies to every logger and handler, also those configured later.
    Calling it again replaces the key files (the factory is installed once)."""
    global _installed
    redactor = LogRedactor(key_files)
    if _installed is None:
        make = logging.getLogRecordFactory()

        def factory(*args, **kwargs) -> logging.LogRecord:
            record = make(*args, **kwargs)
            return _installed.record(record) if _installed is not None else record

        logging.setLogRecordFactory(factory)
    _installed = redactor
    return redactor


def _read_keys(path: Path) -> list[str]:
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    return [v for n in KEY_NAMES if isinstance(v := data.get(n), str) and len(v) >= 8]
