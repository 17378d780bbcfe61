"""The Python endpoint benchmark's arithmetic and its handling of an endpoint that does not answer."""

from __future__ import annotations

import math
import socket

import pytest

from clients.benchmark import Target, concurrencies, percentile, run_level
from pipelines.errors import UserError


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0 and percentile([1.0, 2.0], 50) == 1.0
    assert math.isnan(percentile([], 50))


def test_concurrency_levels_are_checked() -> None:
    assert concurrencies("8,1,2,2") == [1, 2, 8]
    for bad in ("", "0", "1,x", "1,100000"):
        with pytest.raises(UserError, match="--concurrency"):
            concurrencies(bad)


def test_requests_to_a_closed_port_are_counted_as_failed() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    level = run_level(
        Target(f"http://127.0.0.1:{port}/score", "k", b"{}", timeout=5), requests=9, concurrency=2
    )
    assert (level.requests, level.failed, level.non_2xx, level.rps) == (9, 9, 0, 0.0)
    assert math.isnan(level.p99_ms)
