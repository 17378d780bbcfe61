"""A seeded generator of bike-like daily data of any size, with exactly the columns of ``bike-no.csv``.

Rows are consecutive days from 2011-01-01 (``instant`` 1, 2, ...); after 200 years (73,049 rows) the
calendar starts again at 2011-01-01, so every date is one a model can read (pandas' dates end in 2262,
and scoring refuses a date past them as it refuses one that does not exist). Temperature is seasonal,
humidity depends on the weather, and the casual and registered counts sum to ``cnt``. The same ``seed`` and
``n_rows`` always give the same rows, whether built in memory (``generate``) or streamed to a file in
chunks (``write_csv``), so tests and benchmarks can make data of any size without holding it.

    python -m pipelines.datagen --rows 1000000 --seed 0 --out data/bike-1m.csv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import UserError, cli_main

COLUMNS = [
    "instant",
    "date",
    "season",
    "yr",
    "mnth",
    "weekday",
    "weathersit",
    "temp",
    "atemp",
    "hum",
    "windspeed",
    "casual",
    "registered",
    "cnt",
]
CHUNK_ROWS = 100_000
START = np.datetime64("2011-01-01", "D")
CYCLE_DAYS = int((np.datetime64("2211-01-01", "D") - START).astype(int))  # 200 years, then the dates repeat


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """``n_rows`` bike-like rows (same schema as bike-no.csv), reproducible from ``seed``."""
    chunks = list(_chunks(n_rows, seed))
    if not chunks:
        return _chunk(0, 0, seed, 0)
    return pd.concat(chunks, ignore_index=True)


def write_csv(path: str | os.PathLike[str], n_rows: int, seed: int = 0) -> Path:
    """Stream ``generate(n_rows, seed)`` to a CSV file chunk by chunk (atomically); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", newline="") as out:
            out.write(",".join(COLUMNS) + "\n")
            for chunk in _chunks(n_rows, seed):
                chunk.to_csv(out, header=False, index=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _chunks(n_rows: int, seed: int) -> Iterator[pd.DataFrame]:
    if n_rows < 0:
        raise UserError(f"row count must be >= 0, got {n_rows}", hint="e.g. --rows 1000")
    for index, start in enumerate(range(0, n_rows, CHUNK_ROWS)):
        yield _chunk(start, min(CHUNK_ROWS, n_rows - start), seed, index)


def _chunk(start: int, n: int, seed: int, index: int) -> pd.DataFrame:
    """Rows ``start .. start+n-1``; each chunk has its own RNG stream so chunks are independent."""
    rng = np.random.default_rng([seed, index])
    days = START + np.arange(start, start + n) % CYCLE_DAYS
    years = days.astype("datetime64[Y]").astype(int) + 1970
    months = days.astype("datetime64[M]").astype(int) % 12 + 1
    month_start = days.astype("datetime64[M]").astype("datetime64[D]")
    dom = (days - month_start).astype(int) + 1
    doy = (days - days.astype("datetime64[Y]").astype("datetime64[D]")).astype(int) + 1
    weekday = (days.astype(int) + 4) % 7  # 1970-01-01 was a Thursday; 0 = Sunday as in the UCI data
    season = _season(months, dom)
    yr = years - 2011

    weathersit = rng.choice([1, 2, 3], size=n, p=[0.63, 0.34, 0.03])
    seasonal = -np.cos(2 * np.pi * (doy - 20) / 365.25)
    temp = np.clip(0.5 + 0.21 * seasonal + rng.normal(0, 0.07, n), 0.06, 0.86)
    atemp = np.clip(0.92 * temp + 0.02 + rng.normal(0, 0.02, n), 0.08, 0.84)
    hum = np.clip(0.55 + 0.12 * (weathersit - 1) + rng.normal(0, 0.12, n), 0.0, 0.97)
    windspeed = np.clip(rng.gamma(6.0, 0.032, n), 0.02, 0.51)

    weather = np.array([0.0, 1.0, 0.8, 0.35])[weathersit]
    warmth = np.clip(1.0 - 3.0 * (temp - 0.68) ** 2 / 0.4, 0.15, 1.0)
    growth = 1.0 + 0.45 * np.clip(yr, 0, 1)
    working = (weekday >= 1) & (weekday <= 5)
    registered = (4800 * warmth * weather * growth * np.where(working, 1.08, 0.82)) * rng.lognormal(
        0, 0.12, n
    )
    casual = (1700 * warmth**1.5 * weather * growth * np.where(working, 0.45, 1.6)) * rng.lognormal(
        0, 0.25, n
    )
    registered = np.maximum(registered.round(), 20).astype(np.int64)
    casual = np.maximum(casual.round(), 2).astype(np.int64)

    dates = [f"{m}/{d}/{y}" for m, d, y in zip(months.tolist(), dom.tolist(), years.tolist(), strict=True)]
    return pd.DataFrame(
        {
            "instant": np.arange(start + 1, start + n + 1, dtype=np.int64),
            "date": dates,
            "season": season,
            "yr": yr.astype(np.int64),
            "mnth": months.astype(np.int64),
            "weekday": weekday.astype(np.int64),
            "weathersit": weathersit.astype(np.int64),
            "temp": temp.round(6),
            "atemp": atemp.round(6),
            "hum": hum.round(6),
            "windspeed": windspeed.round(6),
            "casual": casual,
            "registered": registered,
            "cnt": casual + registered,
        },
        columns=COLUMNS,
    )


def _season(months: np.ndarray, dom: np.ndarray) -> np.ndarray:
    """UCI seasons by solstice/equinox: 1 winter (Dec 21 - Mar 20), 2 spring, 3 summer, 4 fall."""
    md = months * 100 + dom
    return np.select(
        [(md >= 321) & (md < 621), (md >= 621) & (md < 923), (md >= 923) & (md < 1221)], [2, 3, 4], default=1
    ).astype(np.int64)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Write a bike-like CSV: ``--rows N --seed S --out PATH``."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.datagen", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True, help="number of rows to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same rows)")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--json", action="store_true", help="print the file written and its rows as JSON")
    args = parser.parse_args(argv)
    path = write_csv(args.out, args.rows, args.seed)
    if args.json:
        print(json.dumps({"path": str(path), "rows": args.rows}))
    print(f"wrote {args.rows} rows to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
