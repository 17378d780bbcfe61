"""What a service's request log says at a glance: count, latency percentiles, status codes, and a plot."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

PLOT_SIZE = (1000, 600)  # pixels


def read_requests(log: Path) -> list[dict[str, Any]]:
    """The request log's records (one JSON object a line); lines that are not records are skipped."""
    out = []
    if not log.is_file():
        return out
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "latency_ms" in rec:
            out.append(rec)
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Count, latency p50/p95/p99/mean/max in ms, and requests by status code."""
    latency = np.array([float(r["latency_ms"]) for r in records])
    codes = Counter(str(r.get("status", "?")) for r in records)
    out: dict[str, Any] = {"count": len(records), "status_codes": dict(sorted(codes.items()))}
    if len(latency):
        p50, p95, p99 = np.percentile(latency, [50, 95, 99])
        out["latency_ms"] = {"p50": round(float(p50), 3), "p95": round(float(p95), 3),
                             "p99": round(float(p99), 3), "mean": round(float(latency.mean()), 3),
                             "max": round(float(latency.max()), 3)}  # fmt: skip
        out["first"], out["last"] = records[0].get("time"), records[-1].get("time")
    return out


def summary_lines(summary: dict[str, Any]) -> list[str]:
    if not summary["count"]:
        return ["no requests logged yet"]
    lat = summary["latency_ms"]
    codes = ", ".join(f"{code}: {n}" for code, n in summary["status_codes"].items())
    return [
        f"{summary['count']} requests from {summary['first']} to {summary['last']}",
        f"latency ms: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}",
        f"status codes: {codes}",
    ]


def plot(records: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Latency of each request in order, coloured by status class, with the p50/p95/p99 lines; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(PLOT_SIZE[0] / 100, PLOT_SIZE[1] / 100), dpi=100)
    latency = np.array([float(r["latency_ms"]) for r in records])
    status = np.array([int(r.get("status") or 0) for r in records])
    order = np.arange(len(records))
    for low, name, color in ((200, "2xx", "#2ca02c"), (400, "4xx", "#ff7f0e"), (500, "5xx", "#d62728")):
        chosen = (status >= low) & (status < low + 100)
        if chosen.any():
            ax.scatter(order[chosen], latency[chosen], s=8, color=color, label=f"{name} ({chosen.sum()})")
    if len(latency):
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            value = float(np.percentile(latency, q))
            ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"p{q} {value:.1f} ms")
    ax.set_xlabel("request (in the order logged)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{title}: {len(records)} requests")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
