"""The one check every client makes on a URL it is given, before anything is sent to it."""

from __future__ import annotations

import urllib.parse

from pipelines.errors import UserError


def check_http_url(url: str, hint: str) -> None:
    """UserError (with ``hint``) unless ``url`` is http(s) with a host and, if it has a port, a valid one."""
    parts = urllib.parse.urlsplit(url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a port that is not a number, or out of range
        valid = False
    if not valid:
        raise UserError(f"not an http(s) URL: {url!r}", hint=hint)
