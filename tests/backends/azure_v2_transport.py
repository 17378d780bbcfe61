"""A fake HTTP transport for azure-ai-ml: the SDK's own service boundary, recording every REST request."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._requests_basic import RestRequestsTransportResponse

ARM = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
MGMT = "https://management.azure.com" + ARM


def _unsigned_jwt(claims: dict[str, str]) -> str:
    """A token shaped like Microsoft Entra's (azure-ai-ml reads the user's oid/tid from a job's token)."""

    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


def token_for(*scopes: str) -> str:
    """The token for a scope: its audience is the scope's resource (azure-ai-ml checks it before a job)."""
    ids = {"oid": "00000000-0000-0000-0000-000000000001", "tid": "00000000-0000-0000-0000-000000000002"}
    return _unsigned_jwt({**ids, "aud": scopes[0].removesuffix("/.default") if scopes else ""})


TOKEN = token_for("https://management.azure.com/.default")


class StaticCredential:
    """A credential that hands out a fixed token (no Microsoft Entra call)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(token_for(*scopes), 4102444800)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> AccessTokenInfo:
        return AccessTokenInfo(token_for(*scopes), 4102444800)


@dataclass
class Recorded:
    method: str
    url: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeTransport(HttpTransport):
    """Answers each request with ``answer(method, url, body) -> (status, json)``; records them all."""

    answer: Callable[[str, str, Any], tuple[int, Any]]
    requests: list[Recorded] = field(default_factory=list)

    def __enter__(self) -> FakeTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> Any:
        raw = request.content if hasattr(request, "content") else request.body
        body = _body(raw, request.headers.get("Content-Type", ""))
        self.requests.append(Recorded(request.method, request.url, body, dict(request.headers)))
        status, payload, *extra = self.answer(request.method, request.url, body)
        inner = requests.Response()
        inner.status_code = status
        if isinstance(payload, bytes):
            inner._content = payload
        else:
            inner._content = json.dumps(payload).encode() if payload is not None else b""
            inner.headers["Content-Type"] = "application/json"
        inner.headers.update(extra[0] if extra else {})
        inner.raw = io.BytesIO(inner._content)
        inner.request = requests.Request(request.method, request.url).prepare()
        response = RestRequestsTransportResponse(request=request, internal_response=inner)
        response._content = inner._content
        return response


def _body(raw: Any, content_type: str) -> Any:
    """A JSON body as data, any other (a blob's bytes, a file being read) as bytes."""
    if hasattr(raw, "read"):
        raw = raw.read()
    if isinstance(raw, str):
        raw = raw.encode()
    if isinstance(raw, bytes) and raw and "json" in content_type:
        return json.loads(raw)
    return raw


def online_endpoint(name: str, auth_mode: str = "Key") -> dict[str, Any]:
    """An online endpoint as the service returns it."""
    return {
        "id": f"{ARM}/onlineEndpoints/{name}",
        "name": name,
        "location": "westeurope",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "authMode": auth_mode,
            "provisioningState": "Succeeded",
            "scoringUri": f"https://{name}.westeurope.inference.ml.azure.com/score",
            "traffic": {"blue": 100},
        },
    }


STORAGE = "https://amlopsstore.blob.core.windows.net"
CONTAINER = "azureml-blobstore"
COLLECTIONS = {"versions", "codes", "components", "environments", "models", "jobs", "schedules",
               "onlineEndpoints", "batchEndpoints", "deployments"}  # fmt: skip


class FakeWorkspace:
    """A workspace as its REST API answers: what is PUT can be GET back; a key-credential blob datastore.

    Every request goes through ``FakeTransport`` (azure-ai-ml's ARM client) or, for the storage client that
    azure-ai-ml builds to upload a component's code, through ``RequestsTransport.send`` patched to the same
    transport. Nothing of azure-ai-ml's own logic is replaced.
    """

    def __init__(self) -> None:
        self.resources: dict[str, Any] = {ARM: workspace()}
        self.blobs: dict[str, bytes] = {}
        # (method, workspace path) -> the service's message, and whether a refused PUT still stored its body
        self.refused: dict[tuple[str, str], tuple[str, bool]] = {}

    def refuse(self, method: str, path: str, message: str, stored: bool = False) -> None:
        """Answer ``method`` on the workspace path ``path`` (``/batchEndpoints/x``) with a 400 and ``message``;
        ``stored``: a PUT keeps what it was sent all the same (a request that failed after taking effect)."""
        self.refused[(method, ARM + path)] = (message, stored)

    def __call__(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        path = url.split("?")[0]
        arm_path = path.removeprefix("https://management.azure.com")
        if (method, arm_path) in self.refused:
            message, stored = self.refused[(method, arm_path)]
            if stored and method == "PUT":
                self._put(arm_path, body)
            return 400, {"error": {"code": "BadRequest", "message": message}}
        if path.startswith(STORAGE):
            return self._blob(method, path[len(STORAGE) :], url, body)
        arm = path.removeprefix("https://management.azure.com")
        if arm.endswith("/datastores") or arm.endswith("/datastores/workspaceblobstore"):
            store = datastore()
            return 200, ({"value": [store]} if arm.endswith("/datastores") else store)
        if arm.endswith("/datastores/workspaceblobstore/listSecrets"):
            return 200, {"secretsType": "AccountKey", "key": "a2V5"}
        if arm.endswith("/listKeys") and arm.rsplit("/", 1)[0] in self.resources:
            return 200, {"primaryKey": "key-one", "secondaryKey": "key-two"}
        if arm.endswith("/startPendingUpload"):
            folder = f"{STORAGE}/{CONTAINER}/LocalUpload/{arm.split('/codes/')[1].split('/')[0]}"
            credential = {"credentialType": "SAS", "sasUri": f"{STORAGE}/{CONTAINER}?sv=2024&sig=fake"}
            reference = {"blobUri": folder, "credential": credential}
            return 200, {
                "pendingUploadType": "TemporaryBlobReference",
                "blobReferenceForConsumption": reference,
            }
        if method == "PUT":
            return self._put(arm, body)
        if method == "GET" and arm in self.resources:
            return 200, self.resources[arm]
        if method == "GET" and arm.rsplit("/", 1)[-1] in COLLECTIONS:
            children = [v for k, v in self.resources.items() if k.rsplit("/", 1)[0] == arm]
            if "listViewType=All" not in url:  # the service's default view leaves archived versions out
                children = [c for c in children if not c.get("properties", {}).get("isArchived")]
            return 200, {"value": children}
        if method == "DELETE":
            return (200, None) if self.resources.pop(arm, None) is not None else (204, None)
        return 404, {"error": {"code": "NotFound", "message": f"{method} {arm}"}}

    def _put(self, arm: str, body: Any) -> tuple[int, Any]:
        stored = {**json.loads(json.dumps(body)), "id": arm, "name": arm.rsplit("/", 1)[-1]}
        properties = stored.setdefault("properties", {})
        properties.setdefault("provisioningState", "Succeeded")
        if "/onlineEndpoints/" in arm and "/deployments/" not in arm:
            name = arm.rsplit("/", 1)[-1]
            properties["scoringUri"] = f"https://{name}.westeurope.inference.ml.azure.com/score"
        if "/batchEndpoints/" in arm and "/deployments/" not in arm:
            properties.setdefault("defaults", {})
        # what the service fills in when the request leaves it out
        if "/onlineEndpoints/" in arm and "/deployments/" in arm:
            properties.setdefault("scaleSettings", {"scaleType": "Default"})
        if "/schedules/" in arm:
            properties.setdefault("isEnabled", True)
        if "/jobs/" in arm:
            properties.setdefault("status", "NotStarted")
        self.resources[arm] = stored
        return 200, stored

    def _blob(self, method: str, blob: str, url: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        headers = {
            "ETag": '"0x1"',
            "Last-Modified": "Fri, 04 Dec 2026 00:00:00 GMT",
            "Content-Type": "text/plain",
        }
        if method == "PUT" and "comp=metadata" in url:
            return (200 if blob in self.blobs else 404), b"", headers
        if method == "PUT":
            self.blobs[blob] = body if isinstance(body, bytes) else (body or b"")
            return 201, b"", headers
        if method == "HEAD" and blob in self.blobs:
            return (
                200,
                b"",
                {**headers, "Content-Length": str(len(self.blobs[blob])), "x-ms-blob-type": "BlockBlob"},
            )
        return 404, b"", {**headers, "x-ms-error-code": "BlobNotFound"}


def workspace() -> dict[str, Any]:
    """The workspace as the service returns it (azure-ai-ml reads its location and MLflow tracking URI)."""
    tracking = "azureml://westeurope.api.azureml.ms/mlflow/v1.0" + ARM
    return {"id": ARM, "name": "ws", "location": "westeurope", "properties": {"mlFlowTrackingUri": tracking}}


def datastore() -> dict[str, Any]:
    """The workspace's default blob datastore (account-key credentials), as the service returns it."""
    return {
        "id": f"{ARM}/datastores/workspaceblobstore",
        "name": "workspaceblobstore",
        "properties": {
            "datastoreType": "AzureBlob",
            "accountName": "amlopsstore",
            "containerName": CONTAINER,
            "endpoint": "core.windows.net",
            "protocol": "https",
            "isDefault": True,
            "credentials": {"credentialsType": "AccountKey"},
        },
    }


def registered_model(name: str, version: int) -> tuple[str, dict[str, Any]]:
    """An MLflow model version as the service returns it: its path and body."""
    path = f"{ARM}/models/{name}/versions/{version}"
    uri = f"azureml://datastores/workspaceblobstore/paths/{name}/{version}"
    properties = {"modelType": "mlflow_model", "modelUri": uri, "tags": {}, "properties": {}, "flavors": {}}
    return path, {"id": path, "name": str(version), "properties": properties}


def configure(monkeypatch: Any, fake: FakeWorkspace) -> FakeTransport:
    """A configured workspace (AZUREML_* variables) whose every HTTP request ``fake`` answers; its transport."""
    from azure.core.pipeline.transport import RequestsTransport

    transport = FakeTransport(fake)
    monkeypatch.setattr(RequestsTransport, "send", lambda self, request, **kw: transport.send(request, **kw))
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", StaticCredential)
    for key, value in (("SUBSCRIPTION_ID", "sub"), ("RESOURCE_GROUP", "rg"), ("WORKSPACE_NAME", "ws")):
        monkeypatch.setenv(f"AZUREML_{key}", value)
    return transport


def sent(transport: FakeTransport, method: str, suffix: str) -> list[Any]:
    """The bodies of the ``method`` requests to the workspace path ending in ``suffix``."""
    return [r.body for r in transport.requests if r.method == method and r.url.split("?")[0] == MGMT + suffix]
