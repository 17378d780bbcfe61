"""Primary/secondary keys for local endpoints (published pipelines, deployments).

Keys are generated with ``secrets``, kept in one JSON file per owner with 0600 permissions (written
atomically, so a crash never leaves a half-written key file), compared in constant time, and never
logged: only a short fingerprint (sha256 prefix) may appear in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(keys, fh)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dict(keys)


def fingerprint(key: str) -> str:
    """A loggable identifier for a key: never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _new_key() -> str:
    """32 random bytes, URL-safe; never starting with '-', which command lines would take for an option."""
    while (key := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return key
