"""The local workspace service: published pipelines over HTTP with Azure's request shape, schedules, the run queue,
and the keeper of local real-time deployments (listed at ``/deployments``; started again when they should run).

FastAPI on 127.0.0.1 (uvicorn). Every route except ``/health``, ``/openapi.json`` and the offline Swagger
UI at ``/docs`` needs ``Authorization: Bearer <key>`` (``python -m pipelines.workspace keys``); keys are
read from ``AMLOPS_HOME/service/keys.json`` on every request, so a regenerated key works (and the old
one stops working) at once. Errors are JSON in Azure's shape: ``{"error": {"code", "message"}}``.

Submitting (``POST`` to an endpoint URL, ``<endpoint URL>/<version>`` or a published pipeline URL)
validates everything first and queues only a valid run (routes/submit.py). Ids in URLs follow api_schema's
rules (else 400), and ``/openapi.json`` lists every answer a route gives. The routes live in ``routes/``, one
router per resource; this module assembles them, runs the background work (run queue, scheduler, deployment
keeper) and serves. No key and no query string's values reach the service's log (keys.keep_keys_out_of_logs).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from pipelines import service_logging
from pipelines.errors import UserError
from pipelines.local.serving import deployments
from pipelines.local.workspace import api_schema, run_queue, schedules
from pipelines.local.workspace.data_access import DataAccess
from pipelines.local.workspace.keys import keep_keys_out_of_logs, workspace_key_files
from pipelines.local.workspace.routes import deployments as deployment_routes
from pipelines.local.workspace.routes import docs, endpoints, runs, submit
from pipelines.local.workspace.routes import schedules as schedule_routes
from pipelines.local.workspace.routes.dependencies import key_store
from pipelines.local.workspace.routes.errors import install_error_handlers
from pipelines.local.workspace.service_info import read_service_info, service_dir, write_service_info
from pipelines.settings import amlops_home

LOG = service_logging.get("service")

DEFAULT_PORT = 8765
KEEPER_SECONDS = 5.0  # how often the deployment keeper looks for services to start again
ROUTERS = (docs.router, submit.router, runs.router, endpoints.router, schedule_routes.router,
           deployment_routes.router)  # fmt: skip


def create_app(
    workers: int = 2,
    background: bool = True,
    tick_seconds: float = 1.0,
    data_access: DataAccess | None = None,
) -> FastAPI:
    """The service app; ``background`` starts the run queue and the scheduler (and takes the service lock).

    ``data_access`` says what data REST callers may name (default: AMLOPS_ALLOW_DATA's folders).
    """
    app = FastAPI(
        title=docs.TITLE,
        version="1.0",
        description=(
            "Published pipelines of the local workspace over HTTP, with Azure ML's request and response "
            "shapes (PipelineSubmissionInfo in, PipelineRunEntity out). Authorize with a key from "
            "`python -m pipelines.workspace keys --primary`."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(workers, background, tick_seconds),
    )
    app.openapi_version = "3.0.3"  # the bundled Swagger UI (4.x) renders OpenAPI 3.0, not 3.1
    app.state.data_access = data_access or DataAccess.from_folders([])
    app.openapi = _documented_errors(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    docs.mount_swagger_ui(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def _lifespan(workers: int, background: bool, tick_seconds: float) -> Callable[[FastAPI], Any]:
    """The app's background work: the run queue, the scheduler's clock and the deployment keeper's."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key_store().keys()  # generate on first start
        if not background:
            app.state.queue = None
            yield
            return
        queue = run_queue.RunQueue(workers)
        app.state.queue = queue
        queue.start()

        def fire() -> None:
            if schedules.fire_due():
                queue.notify()

        clocks = [
            schedules.Ticker("scheduler", fire, tick_seconds),
            schedules.Ticker("deployments", revive_deployments, KEEPER_SECONDS),
        ]
        for clock in clocks:
            clock.start()
        try:
            yield
        finally:
            for clock in clocks:
                clock.stop()
            queue.stop()

    return lifespan


def _documented_errors(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the error answers each route gives (api_schema.document_errors), made once."""
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api_schema.document_errors(generate_openapi())
        return app.openapi_schema

    return openapi


def revive_deployments() -> None:
    """Start again the local services that should be running (after the machine restarted, say)."""
    for name in deployments.revive_all():
        LOG.info("deployments: started %s again (it should be running)", name)


class ServiceLock:
    """An exclusive lock on ``AMLOPS_HOME/service/service.lock``: one service per workspace folder."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def close(self) -> None:
        try:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
        finally:
            self.fh.close()


def acquire_lock() -> ServiceLock:
    """Take the service lock (released by the kernel even on SIGKILL); UserError if another service holds it."""
    fh = open(service_dir() / "service.lock", "a+")  # noqa: SIM115 - held for the service's life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        info = read_service_info() or {}
        raise UserError(
            f"a workspace service is already running for {amlops_home()}"
            + (f" (pid {info.get('pid')}, {info.get('url')})" if info else ""),
            hint="stop it first, or use another AMLOPS_HOME",
        ) from None
    return ServiceLock(fh)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 2,
    tick_seconds: float = 1.0,
    as_json: bool = False,
    data_access: DataAccess | None = None,
) -> None:
    """Run the service in the foreground until interrupted (port 0: any free port, see ``status``).

    ``data_access``: what data REST callers may name (default: only dataset names and URLs, and the folders in
    AMLOPS_ALLOW_DATA). No key of the workspace and no query string's values reach its log."""
    import socket

    import uvicorn

    log_level = service_logging.configure()
    home = amlops_home()
    keep_keys_out_of_logs(lambda: workspace_key_files(home))
    data_access = data_access or DataAccess.from_folders([])
    lock = acquire_lock()
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            in_use = exc.errno == errno.EADDRINUSE
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                hint="pick another --port"
                if in_use
                else "pass --host 127.0.0.1 or an address of this machine",
            ) from None
        port = sock.getsockname()[1]
        os.environ["AMLOPS_SERVICE_URL"] = f"http://{host}:{port}"  # the URLs this service prints and answers
        app = create_app(workers=workers, background=True, tick_seconds=tick_seconds, data_access=data_access)
        write_service_info(host, port, workers)
        if as_json:  # one line on stdout a script can read the URL from
            print(
                json.dumps({"url": f"http://{host}:{port}", "pid": os.getpid(), "workers": workers}),
                flush=True,
            )
        print(
            f"workspace {amlops_home()}: serving on http://{host}:{port} with {workers} run workers"
            " (Swagger UI: /docs; key: python -m pipelines.workspace keys --primary)",
            file=sys.stderr,
            flush=True,
        )
        allowed = ", ".join(str(f) for f in data_access.allowed) or "none (--allow-data DIR adds one)"
        print(
            f"data REST callers may name: dataset names, http(s) URLs, and paths in these folders: {allowed}",
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(  # uvicorn's loggers go through service_logging's timestamped handler
            app, host=host, port=port, log_config=None, log_level=logging.getLevelName(log_level).lower(),
            access_log=True, timeout_graceful_shutdown=5,
        )  # fmt: skip
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            (service_dir() / "service.json").unlink(missing_ok=True)
    finally:
        lock.close()
