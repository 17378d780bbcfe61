"""A fake HTTP transport for azure-ai-ml: the SDK's own service boundary, recording every REST request."""

from __future__ import annotations

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


class StaticCredential:
    """A credential that hands out a fixed token (no Microsoft Entra call)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", 4102444800)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> AccessTokenInfo:
        return AccessTokenInfo("test-token", 4102444800)


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
        if isinstance(raw, bytes | str) and raw:
            body = json.loads(raw)
        else:
            body = raw
        self.requests.append(Recorded(request.method, request.url, body, dict(request.headers)))
        status, payload = self.answer(request.method, request.url, body)
        inner = requests.Response()
        inner.status_code = status
        inner._content = json.dumps(payload).encode() if payload is not None else b""
        inner.raw = io.BytesIO(inner._content)
        inner.headers["Content-Type"] = "application/json"
        inner.request = requests.Request(request.method, request.url).prepare()
        response = RestRequestsTransportResponse(request=request, internal_response=inner)
        response._content = inner._content
        return response


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
