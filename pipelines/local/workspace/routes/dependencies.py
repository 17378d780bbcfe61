"""What the routes share, as FastAPI dependencies: the key check, and the app's run queue and data policy."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipelines.errors import UserError
from pipelines.local.workspace.data_access import DataAccess
from pipelines.local.workspace.keys import KeyStore
from pipelines.local.workspace.routes.errors import ApiError
from pipelines.local.workspace.run_queue import RunQueue
from pipelines.settings import amlops_home


def key_store() -> KeyStore:
    """The workspace service's keys."""
    return KeyStore(
        amlops_home() / "service" / "keys.json", "python -m pipelines.workspace keys --regen primary"
    )


_bearer = HTTPBearer(auto_error=False, description="a key from: python -m pipelines.workspace keys --primary")


def require_key(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless ``Authorization: Bearer <primary or secondary key>`` (keys read per request)."""
    try:
        valid = key_store().check_authorization_header(request.headers.get("authorization"))
    except UserError as exc:  # no key can be checked until the keys are made again
        raise ApiError(503, f"the workspace service's {exc}") from None
    if not valid:
        raise ApiError(401, "missing or invalid key: send 'Authorization: Bearer <key>' "
                            "(python -m pipelines.workspace keys --primary)")  # fmt: skip


KEYED = [Depends(require_key)]  # a router's dependencies when each of its routes needs a key


def app_queue(request: Request) -> RunQueue | None:
    """The app's run queue (None when the app runs without its background work, as in tests)."""
    return getattr(request.app.state, "queue", None)


def app_data_access(request: Request) -> DataAccess:
    """What data REST callers of this app may name."""
    return request.app.state.data_access


Queue = Annotated[RunQueue | None, Depends(app_queue)]
Access = Annotated[DataAccess, Depends(app_data_access)]
