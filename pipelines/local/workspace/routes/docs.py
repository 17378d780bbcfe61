"""What needs no key: the offline Swagger UI at ``/docs`` (its files from swagger-ui-bundle) and ``/health``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

TITLE = "amlops local workspace service"

router = APIRouter()


def swagger_ui_folder() -> Path:
    """Swagger UI's static files, from the swagger-ui-bundle package (served offline)."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def mount_swagger_ui(app: FastAPI) -> None:
    """Serve Swagger UI's files under ``/docs/assets`` (mounted on the app: a router cannot carry a mount)."""
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_folder()), name="swagger-ui")


@router.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


@router.get("/health", tags=["service"], summary="liveness (no key needed)")
def health() -> dict[str, str]:
    return {"status": "ok"}
