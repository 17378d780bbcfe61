"""What data a REST caller may name: the one policy for the dataset parameters of runs submitted over HTTP.

Over HTTP, a pipeline's dataset parameter (in ``ParameterAssignments`` or ``DataSetDefinitionValueAssignments``)
may be only

- a dataset **name**: a known dataset (``bike-no``) or ``NAME.csv`` in ``AMLOPS_DATA_DIR`` or the workspace's
  dataset cache, looked up as a name only (never as a path relative to the service's folder);
- an **http(s) URL**, which this machine downloads into the workspace's cache, except one naming this machine
  itself (``localhost``, a loopback or unspecified address), where the workspace service and the deployments
  listen;
- an absolute **path inside a folder the workspace's owner allowed** (``serve --allow-data DIR``, or
  ``AMLOPS_ALLOW_DATA`` with folders separated by ``:``), checked after symlinks and ``..`` are resolved.

Anything else gets the same 400 whether or not it exists, so an answer tells nothing about the server's files.
The run is given the resolved file (or URL), not the caller's text. The command line and schedules, which the
workspace's owner runs, are not limited by this.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import UserError

ALLOW_ENV = "AMLOPS_ALLOW_DATA"
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class DataAccess:
    """The folders REST callers may name data in (resolved, absolute), besides dataset names and URLs."""

    allowed: tuple[Path, ...] = ()

    @classmethod
    def from_folders(
        cls, folders: Iterable[str | os.PathLike[str]], use_environment: bool = True
    ) -> DataAccess:
        """The policy for ``folders`` (and those in AMLOPS_ALLOW_DATA); UserError for one that is not a folder."""
        named = [str(f) for f in folders]
        if use_environment:
            named += [f for f in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if f.strip()]
        allowed: list[Path] = []
        for folder in named:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise UserError(
                    f"cannot allow data in {folder}: no such folder",
                    hint=f"pass existing folders to --allow-data (or in {ALLOW_ENV})",
                )
            if path.resolve() not in allowed:
                allowed.append(path.resolve())
        return cls(tuple(allowed))

    def resolve(self, param: str, ref: Any) -> str:
        """What the run reads for the reference a REST caller sent (a file path or a URL); UserError if refused."""
        from pipelines import datasets

        if not isinstance(ref, str) or not ref.strip():
            raise UserError(
                f"dataset parameter {param!r} expects a dataset name, URL or path, got {json.dumps(ref)[:80]}",
                hint=self.what_is_allowed(),
            )
        if ref.startswith(("http://", "https://")):
            if _names_this_machine(ref):
                raise UserError(f"dataset parameter {param!r}: a URL of this machine cannot be a run's data "
                                "over HTTP", hint=self.what_is_allowed())  # fmt: skip
            return ref
        if DATASET_NAME.fullmatch(ref):
            found = datasets.find_local(ref)
            known = datasets.KNOWN.get(ref.removesuffix(".csv"))
            if found is None and known is None:
                raise UserError(f"dataset parameter {param!r}: no dataset named {ref!r} in this workspace",
                                hint=self.what_is_allowed())  # fmt: skip
            return str(found) if found is not None else known.url
        target = Path(os.path.realpath(ref)) if os.path.isabs(ref) else None
        if target is None or not any(target.is_relative_to(folder) for folder in self.allowed):
            shown = ref if len(ref) <= 80 else ref[:80] + "..."
            raise UserError(
                f"dataset parameter {param!r}: {shown!r} is not a dataset name, an http(s) URL, or a path in a "
                "folder this workspace allows over HTTP",
                hint=self.what_is_allowed(),
            )
        if not target.exists():
            raise UserError(
                f"dataset parameter {param!r}: no file or folder {ref!r}", hint=self.what_is_allowed()
            )
        try:
            return str(datasets.resolve(str(target)))
        except UserError as exc:
            raise UserError(f"dataset parameter {param!r}: {exc.message}", hint=exc.hint) from None

    def what_is_allowed(self) -> str:
        """The hint a refused caller gets."""
        folders = ", ".join(str(f) for f in self.allowed)
        return (
            "send a dataset name (e.g. bike-no, or NAME for NAME.csv in the workspace's data folder), an http(s) "
            "URL, or an absolute path inside "
            + (f"an allowed folder ({folders})" if folders else "a folder the workspace's owner allows with "
               "python -m pipelines.workspace serve --allow-data DIR (none is allowed now)")
        )  # fmt: skip


def _names_this_machine(url: str) -> bool:
    """True for a URL whose host is, or resolves now to, a loopback or unspecified address of this machine (where
    the workspace service and the deployments listen); ``127.1`` and ``2130706433`` are such hosts too."""
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return True  # not a URL urllib would fetch as meant
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False  # not resolvable now: the download fails in the run, naming the URL
    for text in found:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        address = getattr(address, "ipv4_mapped", None) or address
        if address.is_loopback or address.is_unspecified:
            return True
    return False
