"""The service's error answers: Azure's ``{"error": {"code", "message"}}`` body for its own errors, routing's
404/405 and request validation (a 400, where FastAPI would answer 422)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or {
            400: "UserError",
            401: "Unauthorized",
            404: "NotFound",
            413: "PayloadTooLarge",
            503: "ServiceUnavailable",
        }.get(status, "Error")


async def api_error(_: Request, exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, exc.status, headers=headers)


async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # routing's own answers (404, 405 with its Allow header) keep their headers
    return JSONResponse({"error": {"code": "NotFound" if exc.status_code == 404 else "Error",
                                   "message": str(exc.detail)}}, exc.status_code, headers=exc.headers)  # fmt: skip


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = " ".join(str(p) for p in first.get("loc", ()))  # e.g. "path run_id"
    message = f"{where}: {first.get('msg', 'invalid')}"
    return JSONResponse({"error": {"code": "UserError", "message": message[:300]}}, 400)


def install_error_handlers(app: FastAPI) -> None:
    """Answer ``ApiError``, routing errors and request validation errors in Azure's error shape."""
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
