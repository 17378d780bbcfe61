"""A service's request log summarized: count, latency percentiles, status codes; and its latency plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.local.serving import request_stats


def _log(tmp_path: Path) -> Path:
    log = tmp_path / "requests.log"
    rows = [{"time": f"2026-01-01T00:00:{i:02d}.000+00:00", "status": 200, "latency_ms": float(i + 1)}
            for i in range(98)]  # fmt: skip
    rows += [{"time": "2026-01-01T00:01:38.000+00:00", "status": 401, "latency_ms": 0.5},
             {"time": "2026-01-01T00:01:39.000+00:00", "status": 500, "latency_ms": 400.0}]  # fmt: skip
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot a record\n")
    return log


def test_summary_counts_percentiles_and_status_codes(tmp_path: Path) -> None:
    records = request_stats.read_requests(_log(tmp_path))
    summary = request_stats.summarize(records)
    assert summary["count"] == 100
    assert summary["status_codes"] == {"200": 98, "401": 1, "500": 1}
    assert summary["latency_ms"]["p50"] == pytest.approx(49.5, abs=0.6)
    assert 93 <= summary["latency_ms"]["p95"] <= 96 and summary["latency_ms"]["max"] == 400.0
    assert summary["first"].startswith("2026-01-01T00:00:00")
    text = "\n".join(request_stats.summary_lines(summary))
    assert "100 requests" in text and "p99" in text and "500: 1" in text
    assert request_stats.summary_lines(request_stats.summarize([])) == ["no requests logged yet"]


def test_plot_is_a_png_of_the_plot_size(tmp_path: Path) -> None:
    out = request_stats.plot(
        request_stats.read_requests(_log(tmp_path)), tmp_path / "p" / "latency.png", "svc"
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == request_stats.PLOT_SIZE
