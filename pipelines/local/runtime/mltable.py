"""MLTable folders read as Azure reads them: the ``MLTable`` file's paths and its delimited-file settings.

An SDK v2 ``mltable`` input is a folder holding an ``MLTable`` YAML file that names the data files
(``file``, ``folder`` or ``pattern`` paths, relative to the folder) and how to read them
(``read_delimited``: delimiter, encoding, header, empty_as_string; or ``read_parquet``), optionally
followed by ``keep_columns``, ``drop_columns`` and ``take``. Remote paths and other transformations are
refused with a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENCODINGS = {
    "utf8": "utf-8", "utf8bom": "utf-8-sig", "ascii": "ascii", "latin1": "latin-1", "iso88591": "latin-1",
    "windows1252": "cp1252", "utf16": "utf-16", "utf32": "utf-32",
}  # fmt: skip
PLAIN_READ = {"delimiter": ",", "header": "all_files_same_headers"}


class MLTableError(ValueError):
    """An MLTable file the local engine cannot read."""


def is_mltable(path: Path) -> bool:
    return path.is_dir() and (path / "MLTable").is_file()


def spec(folder: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load((folder / "MLTable").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MLTableError(f"cannot read {folder / 'MLTable'}: {exc}") from None
    if not isinstance(loaded, dict) or not loaded.get("paths"):
        raise MLTableError(f"{folder / 'MLTable'} names no paths")
    return loaded


def files(folder: Path) -> list[Path]:
    """The data files an MLTable names, in order."""
    found: list[Path] = []
    for entry in spec(folder)["paths"]:
        (kind, value), *_ = entry.items()
        text = str(value)
        if "://" in text or text.startswith("azureml:"):
            raise MLTableError(
                f"{folder / 'MLTable'}: path {text} is remote; the local engine reads local files"
            )
        target = (folder / text).resolve()
        if kind == "file":
            found.append(target)
        elif kind == "folder":
            found.extend(sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif kind == "pattern":
            found.extend(sorted(p for p in folder.glob(text.removeprefix("./")) if p.is_file()))
        else:
            raise MLTableError(f"{folder / 'MLTable'}: unknown path kind {kind!r}")
    missing = [str(p) for p in found if not p.is_file()]
    if missing or not found:
        raise MLTableError(f"{folder / 'MLTable'} names no file that exists ({', '.join(missing) or 'none'})")
    return [p for p in found if p.name != "MLTable"]


def _steps(folder: Path) -> tuple[str, dict[str, Any], list[tuple[str, Any]]]:
    """The read transformation (its name and settings) and the column transformations after it."""
    read, settings, after = "read_delimited", {}, []
    for item in spec(folder).get("transformations") or []:
        (name, value), *_ = item.items() if isinstance(item, dict) else [(item, None)]
        if name in ("read_delimited", "read_parquet"):
            read, settings = name, dict(value or {})
        elif name in ("keep_columns", "drop_columns", "take"):
            after.append((name, value))
        else:
            raise MLTableError(f"{folder / 'MLTable'}: transformation {name} is not supported locally")
    return read, settings, after


def plain_csv_files(folder: Path) -> list[Path] | None:
    """The MLTable's files when they are plain comma-separated UTF-8 with one header each, else None."""
    read, settings, after = _steps(folder)
    if read != "read_delimited" or after:
        return None
    chosen = {**PLAIN_READ, **{k: v for k, v in settings.items() if k in PLAIN_READ}}
    encoding = ENCODINGS.get(str(settings.get("encoding", "utf8")).lower().replace("-", ""), "?")
    found = files(folder)
    plain = chosen == PLAIN_READ or (
        len(found) == 1 and chosen == {**PLAIN_READ, "header": "from_first_file"}
    )
    return found if plain and encoding in ("utf-8", "ascii") else None


def read(folder: Path) -> Any:
    """The table as a pandas DataFrame."""
    import pandas as pd

    read_kind, settings, after = _steps(folder)
    paths = files(folder)
    if read_kind == "read_parquet":
        frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    else:
        frames = [_read_delimited(paths[0], settings)]
        if str(settings.get("header")) == "from_first_file":  # the later files have no header row
            settings = {**settings, "header": "no_header", "names": list(frames[0].columns)}
        frames += [_read_delimited(p, settings) for p in paths[1:]]
        frame = pd.concat(frames, ignore_index=True)
    for name, value in after:
        columns = [value] if isinstance(value, str) else list(value or [])
        if name == "keep_columns":
            frame = frame[columns]
        elif name == "drop_columns":
            frame = frame.drop(columns=columns)
        else:
            frame = frame.head(int(value))
    return frame


def _read_delimited(path: Path, settings: dict[str, Any]) -> Any:
    import pandas as pd

    encoding = str(settings.get("encoding", "utf8")).lower().replace("-", "")
    if encoding not in ENCODINGS:
        raise MLTableError(f"encoding {encoding} is not one MLTable knows ({', '.join(ENCODINGS)})")
    header = str(settings.get("header", "all_files_same_headers"))
    if header not in (
        "all_files_same_headers",
        "from_first_file",
        "all_files_different_headers",
        "no_header",
    ):
        raise MLTableError(f"header {header} is not one MLTable knows")
    names = settings.get("names")
    if header == "no_header" and names is None:
        first = pd.read_csv(path, sep=settings.get("delimiter", ","), header=None, nrows=1)
        names = [f"Column{i + 1}" for i in range(first.shape[1])]
    empty_as_string = bool(settings.get("empty_as_string", False))
    return pd.read_csv(
        path,
        sep=settings.get("delimiter", ","),
        encoding=ENCODINGS[encoding],
        header=None if names else 0,
        names=names,
        keep_default_na=not empty_as_string,
        na_values=None if not empty_as_string else [],
    )
