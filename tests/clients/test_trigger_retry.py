"""The REST trigger client sends a request again after 429/503, waiting as Retry-After says; other 4xx end it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from clients import trigger_pipeline
from pipelines.errors import UserError
from tests.conftest import JsonHandler


class Busy(JsonHandler):
    """POSTs are answered from ``answers`` in turn ((status, Retry-After or None)); then a run entity."""

    answers: list[tuple[int, str | None]] = []
    posts = 0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts += 1
        if self.answers:
            status, after = self.answers.pop(0)
            data = json.dumps({"error": {"message": f"busy {status}"}}).encode()
            self.send_response(status)
            if after is not None:
                self.send_header("Retry-After", after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._send({"Id": "run-1", "Status": {"StatusCode": "NotStarted"}})


@pytest.fixture
def busy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Busy.posts = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/pipelines/v1.0/PipelineRuns/PipelineSubmit/p1"
    server.shutdown()


def test_429_and_503_are_retried_after_retry_after(busy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(trigger_pipeline.time, "sleep", waits.append)
    Busy.answers = [(429, "3"), (503, None), (429, "Wed, 21 Oct 2015 07:28:00 GMT")]
    entity = trigger_pipeline.submit(busy, trigger_pipeline.KeyAuth("k"), "exp")
    assert entity["Id"] == "run-1" and Busy.posts == 4
    assert waits == [3.0, 2.0, 0.0]  # Retry-After seconds; none: back off (2**attempt); a past date: at once


def test_a_long_retry_after_is_capped_and_retries_end(busy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(trigger_pipeline.time, "sleep", waits.append)
    Busy.answers = [(429, "3600")] * (trigger_pipeline.RETRIES + 1)
    with pytest.raises(UserError, match=r"rejected the request \(429\)"):
        trigger_pipeline.submit(busy, trigger_pipeline.KeyAuth("k"), "exp")
    assert waits == [trigger_pipeline.MAX_RETRY_AFTER] * trigger_pipeline.RETRIES
    assert Busy.posts == trigger_pipeline.RETRIES + 1


def test_other_4xx_is_not_retried(busy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trigger_pipeline.time, "sleep", lambda s: pytest.fail("slept"))
    Busy.answers = [(400, "1")]
    with pytest.raises(UserError, match=r"\(400\)"):
        trigger_pipeline.submit(busy, trigger_pipeline.KeyAuth("k"), "exp")
    assert Busy.posts == 1
