"""The dataset resolver: names, paths and URLs to local CSV files.

A name is looked up in ``AMLOPS_DATA_DIR`` first, then in the workspace's cache, then downloaded from
its public URL and checksum-verified. Nothing else in the project knows where a data file lives.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import UserError
from pipelines.settings import amlops_home


@dataclass(frozen=True)
class KnownDataset:
    name: str
    file_name: str
    url: str
    sha256: str
    attribution: str


KNOWN: dict[str, KnownDataset] = {
    "bike-no": KnownDataset(
        name="bike-no",
        file_name="bike-no.csv",
        url=(
            "https://raw.githubusercontent.com/Azure/MachineLearningNotebooks/master/how-to-use-azureml/"
            "automated-machine-learning/forecasting-bike-share/bike-no.csv"
        ),
        sha256="20daa4116a8bda6288ce08e3828bd13e0d5351e1c41699285d5615ceaa26cd52",
        attribution=(
            "UCI Bike Sharing Dataset (Fanaee-T and Gama, 2013; Capital Bikeshare, Washington D.C.), "
            "daily counts as shipped in Azure's MachineLearningNotebooks samples"
        ),
    )
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(ref: str) -> Path:
    """A local file for a dataset name, a path, or an http(s) URL. Raises UserError if none is found."""
    if ref.startswith(("http://", "https://")):
        known = next((k for k in KNOWN.values() if k.url == ref), None)
        if known is not None:  # a known dataset's URL: the local data folder and the cache come first
            return find_local(known.name) or _download(known.url, _cache_dir() / known.name, known)
        return _download(ref, _cache_dir() / hashlib.sha256(ref.encode()).hexdigest()[:16], known)
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir():
            csvs = sorted(path.glob("*.csv"))
            if not csvs:
                raise UserError(
                    f"folder {ref} holds no .csv file", hint="pass a CSV file or a folder of CSVs"
                )
        return path.resolve()
    found = find_local(ref)
    if found is not None:
        return found
    known = KNOWN.get(ref[:-4] if ref.endswith(".csv") else ref)
    if known is None:
        raise UserError(
            f"dataset {ref!r} is neither a file nor a known dataset name",
            hint="pass a CSV path or URL, put NAME.csv in AMLOPS_DATA_DIR, or use one of: "
            + ", ".join(KNOWN),
        )
    return _download(known.url, _cache_dir() / known.name, known)


def find_local(ref: str) -> Path | None:
    """The file a dataset *name* stands for on this machine (``NAME.csv`` in AMLOPS_DATA_DIR, then the
    workspace's cache), never downloaded and never read as a path; None if neither holds it."""
    name = ref[:-4] if ref.endswith(".csv") else ref
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        return None  # a name, not a path
    known = KNOWN.get(name)
    file_name = known.file_name if known else f"{name}.csv"
    data_dir = os.environ.get("AMLOPS_DATA_DIR")
    if data_dir and (Path(data_dir) / file_name).is_file():
        return (Path(data_dir) / file_name).resolve()
    cached = _cache_dir() / name / file_name
    if cached.is_file() and (known is None or sha256_of(cached) == known.sha256):
        return cached
    return None


def _cache_dir() -> Path:
    return amlops_home() / "datasets"


def _download(url: str, folder: Path, known: KnownDataset | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (known.file_name if known else (Path(url.split("?")[0]).name or "data.csv"))
    if target.is_file() and (known is None or sha256_of(target) == known.sha256):
        return target
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
                while block := resp.read(1 << 20):
                    out.write(block)
        except OSError as exc:
            raise UserError(
                f"could not download {url}: {exc}",
                hint="set AMLOPS_DATA_DIR to a folder holding the file, or pass a local path",
            ) from None
        if known is not None and sha256_of(Path(tmp)) != known.sha256:
            raise UserError(
                f"checksum mismatch for {url}", hint="the download is corrupt or changed upstream"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def csv_files(path: Path) -> list[Path]:
    """The CSV files a resolved dataset path stands for (the file itself, or a folder's ``*.csv``)."""
    return sorted(path.glob("*.csv")) if path.is_dir() else [path]
