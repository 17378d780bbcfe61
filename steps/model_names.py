"""The rule for registered model names, and how to look a name up in an MLflow registry.

One rule for every command that takes a model name and for the register step (which runs on Azure
with only this folder): Azure ML's own model name rule (``Model.register``: letters, digits, ``-``,
``_`` and ``.``, starting with a letter or digit), which also passes MLflow's (no ``/`` or ``:``, no
name that normalizes to another path), bounded to ``MAX_LENGTH`` characters so that a name, which
becomes folder names when a model is laid out (``<name>-<version>``), stays one path component.
No imports beyond the standard library: the register step and the CLIs share it.
"""

from __future__ import annotations

import re
from typing import Any

MAX_LENGTH = 200
PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RULE = (
    f"use 1-{MAX_LENGTH} letters, digits, '-', '_' or '.', starting with a letter or digit (e.g. bike-demand)"
)


def problem(name: Any) -> str | None:
    """What is wrong with ``name`` as a model name, or None if it is a valid one."""
    if not isinstance(name, str):
        return f"a model name is text, got {type(name).__name__}"
    if not name:
        return "the model name is empty"
    if len(name) > MAX_LENGTH:
        return f"model name {shown(name)} is {len(name)} characters long, more than {MAX_LENGTH}"
    if not PATTERN.fullmatch(name):
        bad = next((c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c)), name[0])
        return f"model name {shown(name)} has the character {bad!r}, which model names may not use here"
    return None


def shown(name: str, limit: int = 40) -> str:
    """``name`` quoted for an error line, cut short if it is long."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}..."


def search_filter(name: str) -> str | None:
    """An MLflow ``search_model_versions`` filter matching exactly ``name``, or None if none can.

    MLflow takes a string literal between single or double quotes and has no escape for the quote
    itself, so a name is quoted with the quote it does not contain.
    """
    for quote in ("'", '"'):
        if quote not in name:
            return f"name = {quote}{name}{quote}"
    return None


def versions_of(client: Any, name: str) -> list[Any]:
    """Every registered version of the model ``name`` (any name MLflow holds, quotes included)."""
    text = search_filter(name)
    found: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(text or "", page_token=token)
        found.extend(v for v in page if v.name == name)
        token = getattr(page, "token", None)
        if not token:
            return found
