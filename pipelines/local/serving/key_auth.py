"""The key-auth front of a local deployment: WSGI middleware around azureml-inference-server-http's app.

It runs inside each gunicorn worker (no extra hop): ``/score`` needs ``Authorization: Bearer <primary or
secondary key>`` (else 401, and the scoring script is not called), bodies over the deployment's limit get
413 before they are read, the server's own 5xx answers (a crash or timeout in ``run()``) carry the request id
in the body too, and every request can be logged with status and latency (the local stand-in for
Application Insights). The path is checked as the server routes it (``//score`` is ``/score``). A browser's
CORS preflight, which carries no key, goes to the server, which answers it without calling ``run()``. The health route ``/``,
``/swagger.json`` (as on Azure) and the offline Swagger UI at ``/swagger-ui/`` need no key.

gunicorn builds it with ``pipelines.local.serving.key_auth:from_environment()``; the deployment folder comes from
``AMLOPS_DEPLOYMENT_DIR``. Keys are re-read when the key file changes, so a regenerated key works (and
the old one stops working) on the next request; so does a change of the service's settings (``update``).
Before the server logs anything, every log record of the worker is made to carry no key of the workspace
and no query string's values (keys.keep_keys_out_of_logs), so ``?key=...`` never reaches ``server.log``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import io
import json
import mimetypes
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.local.workspace.keys import KEY_NAMES, KeyStore, keep_keys_out_of_logs, workspace_key_files

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

SCORE_PATH = "/score"
SWAGGER_UI_PATH = "/swagger-ui/"
OPEN_PATHS = ("/", "/swagger.json")
DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_NESTING = 100  # a scoring request nests three levels
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")
_SLASHES = re.compile(r"/{2,}")
ALLOWED_METHODS = {"/": "GET, HEAD", "/score": "POST, OPTIONS", "/swagger.json": "GET, HEAD"}


class KeyChecker:
    """Constant-time check of a Bearer key against the primary and secondary keys in a key file."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, bytes] = {}

    def which(self, header: str | None) -> str | None:
        """``"primary"``/``"secondary"`` for a valid ``Bearer <key>`` header, else None."""
        self._refresh()
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode()
        found = None
        for name in KEY_NAMES:  # compare against both keys, always, in constant time
            if hmac.compare_digest(presented, self._keys[name]) and scheme.lower() == "bearer" and presented:
                found = name
        return found

    def _refresh(self) -> None:
        st = os.stat(self.store.path)
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp != self._stamp:
            self._keys = {name: key.encode() for name, key in self.store.keys().items()}
            self._stamp = stamp


class RequestLog:
    """JSON lines with time, request id, method, path, status, latency and which key was used."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - kept for the worker's life

    def write(self, **fields: Any) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class KeyAuthMiddleware:
    """Key check, body limit, request log and Swagger UI in front of the inference server's WSGI app."""

    def __init__(
        self,
        inner: WSGIApp,
        keys: KeyChecker,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_log: RequestLog | None = None,
        swagger_ui_dir: Path | None = None,
        script_input: Callable[[], str] = lambda: "json",
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.inner = inner
        self.redact = redact
        self._script_input = script_input
        self._input_kind: str | None = None
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.log = request_log or RequestLog(None)
        self.swagger_ui = SwaggerUI(swagger_ui_dir) if swagger_ui_dir else None
        self.service_file: Path | None = None
        self._service_stamp: tuple[int, int, int] | None = None

    @property
    def input_kind(self) -> str:
        """How the server hands a request to run(): "json" (@input_schema: the body is parsed as JSON),
        "text" (undecorated: the body as text) or "raw" (@rawhttp: the request itself, for any method)."""
        if self._input_kind is None:
            self._input_kind = self._script_input()
        return self._input_kind

    def follow(self, service_file: Path) -> KeyAuthMiddleware:
        """Re-read the body limit and App Insights switch whenever ``service_file`` changes (no restart)."""
        self.service_file = Path(service_file)
        self._reload_settings()
        return self

    def _reload_settings(self) -> None:
        st = os.stat(self.service_file)
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp == self._service_stamp:
            return
        config = json.loads(self.service_file.read_text())
        self.max_body_bytes = int(config.get("max_body_bytes") or DEFAULT_MAX_BODY_BYTES)
        wanted = self.service_file.parent / "requests.log" if config.get("app_insights") else None
        if wanted != self.log.path:
            self.log.close()
            self.log = RequestLog(wanted)
        self._service_stamp = stamp

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        if self.service_file is not None:
            self._reload_settings()
        path = routed_path(environ.get("PATH_INFO") or "/")
        environ["PATH_INFO"] = path  # what is checked here is what the server routes ("//score" is /score)
        request_id = environ.get("HTTP_X_REQUEST_ID") or str(uuid.uuid4())
        environ["HTTP_X_REQUEST_ID"] = request_id
        key_name = None
        status_holder: list[str] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status_holder.append(status)
            if (
                status.startswith("405") and path in ALLOWED_METHODS
            ):  # the server's 405s lack Allow (RFC 9110)
                headers = [*headers, ("Allow", ALLOWED_METHODS[path])]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        if path == SCORE_PATH:
            try:
                key_name = self.keys.which(environ.get("HTTP_AUTHORIZATION"))
                damaged = None
            except UserError as exc:  # no key can be checked: the service's owner must make new ones
                key_name, damaged = None, exc
            if key_name is None and _preflight(environ) and self.input_kind != "raw":
                # a CORS preflight: the server answers it (flask-cors) and does not call run()
                body = self.inner(environ, capture)
            elif damaged is not None:
                body = _respond(capture, 503, f"this service's {damaged}", environ)
            elif key_name is None:
                body = _respond(capture, 401, "missing or invalid key: send 'Authorization: Bearer <key>'",
                                environ, [("WWW-Authenticate", 'Bearer realm="score"')])  # fmt: skip
            elif environ.get("REQUEST_METHOD") not in ("POST", "OPTIONS"):  # as documented: POST only
                body = _respond(capture, 405, "use POST", environ)  # (capture adds Allow)
            else:
                body = self._score(environ, capture)
        elif path == "/swagger.json" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            body = self._swagger(environ, capture)
        elif self.swagger_ui is not None and (
            path == SWAGGER_UI_PATH.rstrip("/") or path.startswith(SWAGGER_UI_PATH)
        ):
            body = self.swagger_ui.serve(path, capture)
        else:
            body = self.inner(environ, capture)
        if self.log.path is not None:
            status = int(status_holder[0].split(" ", 1)[0]) if status_holder else 0
            self.log.write(
                time=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                request_id=request_id,
                method=environ.get("REQUEST_METHOD"),
                path=self.redact(path),
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                key=key_name,
                bytes_in=int(environ.get("CONTENT_LENGTH") or 0),
            )
        return body

    def _score(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        too_large = f"request body is over the limit of {self.max_body_bytes} bytes"
        length = environ.get("CONTENT_LENGTH")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            return _respond(start_response, 413, too_large, environ)
        if environ.get("REQUEST_METHOD") == "POST":
            # read the body here (at most limit + 1 bytes when chunked) so that it can be checked
            data = environ["wsgi.input"].read(
                int(length) if length and length.isdigit() else self.max_body_bytes + 1
            )
            if len(data) > self.max_body_bytes:
                return _respond(start_response, 413, too_large, environ)
            if self.input_kind == "json" and _is_json(environ.get("CONTENT_TYPE")):  # json.loads comes next
                if not _decodable(data):  # json.loads raises UnicodeDecodeError there -> 500
                    return _respond(
                        start_response, 400, "request body is not valid JSON text (UTF-8)", environ
                    )
                if _too_deep(data):  # json.loads raises RecursionError there -> 500
                    return _respond(start_response, 400, "request body nests JSON too deeply: send "
                                    '{"data": [{"column": value, ...}, ...]}', environ)  # fmt: skip
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
        held: list[tuple[str, list[tuple[str, str]]]] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            held.append((status, headers))
            return lambda _data: None

        result = self.inner(environ, hold)
        if held and not held[-1][0].startswith("5"):  # passed on as the server gives it (a stream stays one)
            start_response(*held[-1])
            return result
        body = _drain(result)
        status, headers = held[-1]
        chunks, headers = _with_request_id(body, headers, environ["HTTP_X_REQUEST_ID"])
        start_response(status, headers)
        return chunks

    def _swagger(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The server's swagger.json (any version it serves), told that this local endpoint speaks plain http.

        Built from the server's GET answer even for HEAD, whose answer has no document to rewrite."""
        held: list[tuple[str, list[tuple[str, str]]]] = []
        body = _drain(
            self.inner({**environ, "REQUEST_METHOD": "GET"}, lambda s, h, exc_info=None: held.append((s, h)))
        )
        status, headers = held[-1]
        if status.startswith("200"):
            with contextlib.suppress(ValueError):
                spec = json.loads(body)
                if isinstance(spec, dict):
                    body = json.dumps(document_local_swagger(spec)).encode()
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def document_local_swagger(spec: dict[str, Any]) -> dict[str, Any]:
    """The server's swagger made exact for this endpoint: plain http, a required body, the health route's text."""
    paths = spec.get("paths", {})
    if "swagger" in spec:
        spec["schemes"] = ["http"]
        for param in paths.get("/score", {}).get("post", {}).get("parameters", []):
            if param.get("in") == "body":
                param["required"] = True
        if "get" in paths.get("/", {}):
            paths["/"]["get"]["produces"] = ["text/html", "application/json"]
    else:
        body = paths.get("/score", {}).get("post", {}).get("requestBody")
        if isinstance(body, dict):
            body["required"] = True
    return spec


class SwaggerUI:
    """Swagger UI's static files from the swagger-ui-bundle package, pointed at ``/swagger.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, tuple[bytes, str]] = {}

    def serve(self, path: str, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if path == SWAGGER_UI_PATH.rstrip("/"):
            start_response("301 Moved Permanently", [("Location", SWAGGER_UI_PATH), ("Content-Length", "0")])
            return [b""]
        name = path[len(SWAGGER_UI_PATH) :] or "index.html"
        found = self._file(name)
        if found is None:
            body = b'{"message": "not found"}'
            start_response(
                "404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        data, content_type = found
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data)))])
        return [data]

    def _file(self, name: str) -> tuple[bytes, str] | None:
        if name in self._cache:
            return self._cache[name]
        if name == "index.html":
            data = render_swagger_index(self.folder, "/swagger.json").encode()
        else:
            target = (self.folder / name).resolve()
            if self.folder.resolve() not in target.parents or not target.is_file():
                return None
            data = target.read_bytes()
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._cache[name] = (data, content_type)
        return self._cache[name]


def render_swagger_index(folder: Path, spec_url: str) -> str:
    """Swagger UI's index page from the bundle's template, loading ``spec_url`` (no CDN, no validator)."""
    import jinja2

    template = jinja2.Template((Path(folder) / "index.j2").read_text())
    return template.render(openapi_spec_url=spec_url, validatorUrl="null")


def swagger_ui_folder() -> Path:
    """Where the swagger-ui-bundle package keeps Swagger UI's files."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def _respond(
    start_response: Callable[..., Any],
    code: int,
    message: str,
    environ: dict[str, Any],
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    """This front's own answer, with the request id in the body and the server's tracing headers."""
    reasons = {400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed", 413: "Payload Too Large",
               503: "Service Unavailable"}  # fmt: skip
    request_id = environ["HTTP_X_REQUEST_ID"]
    body = json.dumps({"message": message, "request_id": request_id}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *tracing_headers(environ),
        *cors_headers(environ),
        *(extra or []),
    ]
    start_response(f"{code} {reasons.get(code, 'Error')}", headers)
    return [body]


def script_input(parser: Any) -> str:
    """How the inference server gives the request to run(), from its input parser: "json", "text" or "raw"."""
    from azureml_inference_server_http.server.input_parsers import JsonStringInput, ObjectInput

    if isinstance(parser, ObjectInput):
        return "json"
    return "text" if isinstance(parser, JsonStringInput) else "raw"


def _preflight(environ: dict[str, Any]) -> bool:
    """A browser's CORS preflight (which never carries the Authorization header)."""
    return (
        environ.get("REQUEST_METHOD") == "OPTIONS"
        and bool(environ.get("HTTP_ORIGIN"))
        and bool(environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"))
    )


def cors_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """What flask-cors adds to the server's answers for an allowed Origin (AML_CORS_ORIGINS), for this front's
    own answers: a browser page may then read a 401 or 413 too."""
    origin = environ.get("HTTP_ORIGIN")
    allowed = [o.strip() for o in os.environ.get("AML_CORS_ORIGINS", "").split(",") if o.strip()]
    if not origin or not allowed:
        return []
    if "*" in allowed:
        return [("Access-Control-Allow-Origin", "*")]
    return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")] if origin in allowed else []


def tracing_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The request-id headers the inference server puts on its own answers (its routes.py), for a request whose
    ``x-request-id`` is already set: the ids echoed, ``x-ms-request-id`` kept for older clients."""
    request_id = environ["HTTP_X_REQUEST_ID"]
    legacy = environ.get("HTTP_X_MS_REQUEST_ID", "")
    client = environ.get("HTTP_X_MS_CLIENT_REQUEST_ID", "") or legacy
    headers = [("x-request-id", request_id), ("x-ms-request-id", legacy or client or request_id)]
    if client:
        headers.append(("x-ms-client-request-id", client))
    if os.environ.get("HTTP_X_MS_SERVER_VERSION"):
        headers.append(("x-ms-server-version", os.environ["HTTP_X_MS_SERVER_VERSION"]))
    return headers


def routed_path(path: str) -> str:
    """The path as the server's router reads it: werkzeug drops extra leading slashes (``//score`` is
    ``/score``) and merges repeated ones."""
    return "/" + _SLASHES.sub("/", path.lstrip("/"))


def _is_json(content_type: str | None) -> bool:
    """Whether the server reads a body of this Content-Type as JSON (werkzeug's ``Request.is_json``)."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _drain(result: Iterable[bytes]) -> bytes:
    """A WSGI answer's whole body, closing the iterable as a server would."""
    try:
        return b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()


def _too_deep(data: bytes) -> bool:
    """True if ``data`` nests JSON arrays/objects deeper than MAX_NESTING (Python's parser would run out of
    recursion). Only bodies with that many brackets are scanned: nesting is no deeper than their count."""
    if data.count(b"[") + data.count(b"{") <= MAX_NESTING:
        return False
    text = _JSON_STRING.sub("", data.decode(json.detect_encoding(data), errors="replace"))
    depth = 0
    for bracket in _BRACKET.findall(text):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_NESTING:
            return True
    return False


def _decodable(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            json.loads(data)  # JSON may also come as UTF-16/32
        except ValueError:
            return False
    return True


def _with_request_id(
    body: bytes, headers: list[tuple[str, str]], request_id: str
) -> tuple[list[bytes], list[tuple[str, str]]]:
    """A 5xx answer with the request id added to its body, if it is the server's own ``{"message": ...}``
    (a crash or timeout in run()); what run() itself answered is passed on as it is."""
    try:
        payload = json.loads(body)
    except ValueError:
        return [body], headers
    if not isinstance(payload, dict) or set(payload) != {"message"}:
        return [body], headers
    payload["request_id"] = request_id
    body = json.dumps(payload).encode()
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [
        ("Content-Length", str(len(body)))
    ]
    return [body], headers


def from_environment() -> KeyAuthMiddleware:
    """The middleware for the deployment in ``AMLOPS_DEPLOYMENT_DIR``, around the inference server's app.

    The model is the one service.json names when the worker starts (so a worker started during a model
    update loads the new one); once it is loaded, ``workers/<pid>`` says which model this worker serves.
    """
    from pipelines.local.serving.records import LocalService, key_store
    from pipelines.local.serving.supervisor import model_settings

    folder = Path(os.environ["AMLOPS_DEPLOYMENT_DIR"])
    # before the server logs its first request line: no key and no query string value reaches server.log
    redactor = keep_keys_out_of_logs(
        lambda: [folder / "keys.json", *workspace_key_files(folder.parent.parent)]
    )
    service = LocalService(**json.loads((folder / "service.json").read_text()))
    os.environ.update(model_settings(service))  # read by the inference server's config at its import
    from azureml_inference_server_http.server.entry import app as inner
    from azureml_inference_server_http.server.routes import main_blueprint

    middleware = KeyAuthMiddleware(
        inner,
        KeyChecker(key_store(service.name, folder)),
        swagger_ui_dir=swagger_ui_folder(),
        script_input=lambda: script_input(main_blueprint.user_script.input_parser),
        redact=redactor.redact,
    )
    mark_ready(folder / "workers", f"{service.model_name}:{service.model_version}")
    return middleware.follow(folder / "service.json")


def mark_ready(ready: Path, model: str) -> None:
    """Write ``<ready>/<this pid>`` naming the model, and drop the markers of workers that are gone."""
    ready.mkdir(exist_ok=True)
    (ready / str(os.getpid())).write_text(model)
    for marker in ready.iterdir():
        try:
            os.kill(int(marker.name), 0)
        except ProcessLookupError:
            marker.unlink(missing_ok=True)
        except (ValueError, PermissionError):  # not a pid / a live process of another user
            pass
