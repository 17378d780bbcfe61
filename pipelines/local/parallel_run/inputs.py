"""A job's inputs and folders: the entry script, the input files and their kind, where output may go."""

from __future__ import annotations

from pathlib import Path

from pipelines.errors import UserError
from pipelines.local.parallel_run.mini_batches import MiniBatch
from pipelines.local.parallel_run.options import ParallelRunOptions


def locate_entry_script(options: ParallelRunOptions) -> tuple[Path, Path]:
    source = Path(options.source_directory).expanduser() if options.source_directory else None
    entry = Path(options.entry_script).expanduser()
    if source is not None and not entry.is_absolute():
        entry = source / entry
    if not entry.is_file():
        raise UserError(
            f"entry script {entry} does not exist", hint="pass the path of a .py file with init()/run()"
        )
    if source is None:
        source = entry.parent
    if not source.is_dir():
        raise UserError(f"source directory {source} does not exist", hint="check --source-dir")
    return source.resolve(), entry.resolve()


def input_files(inputs: list[Path], kind: str) -> tuple[str, list[Path]]:
    if not inputs:
        raise UserError("no input given", hint="pass --input PATH (a CSV file, or a folder)")
    files: list[Path] = []
    for path in inputs:
        if not path.exists():
            raise UserError(f"input {path} does not exist", hint="pass an existing CSV file or folder")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not hidden(p.relative_to(path)))
            if not found:
                raise UserError(f"input folder {path} holds no files", hint="pass a folder with data files")
            files += found
        else:
            files.append(path)
    files = [f.resolve() for f in files]
    if kind == "auto":
        csvs = [f for f in files if f.suffix.lower() == ".csv"]
        if csvs and len(csvs) != len(files):  # the kind must not depend on a stray file
            others = [f.name for f in files if f.suffix.lower() != ".csv"]
            raise UserError(
                f"the input mixes CSV files with other files ({', '.join(others[:3])})",
                hint="pass --input-kind tabular with only CSV files, or --input-kind file to pass every path to run()",
            )
        kind = "tabular" if csvs else "file"
    elif kind == "tabular":
        not_csv = [f.name for f in files if f.suffix.lower() != ".csv"]
        if not_csv:
            raise UserError(
                f"tabular input must be CSV files; got {', '.join(not_csv[:3])}",
                hint="use --input-kind file to pass file paths to run()",
            )
    return kind, files


def files_of(source: Path, files: list[Path]) -> list[Path]:
    """Those of ``files`` (from ``input_files``) that the input ``source``, a file or a folder, gave."""
    source = source.resolve()
    return [f for f in files if f == source or source in f.parents]


def hidden(relative: Path) -> bool:
    """Whether a file in an input folder is hidden: a part of its path starts with "." or "_" (as Hadoop and
    Spark mark their own files, e.g. ``_SUCCESS``, ``.ipynb_checkpoints/``)."""
    return any(part.startswith((".", "_")) for part in relative.parts)


def check_output_folders(output: Path, report: Path, inputs: list[Path]) -> None:
    """The output and report folders must be folders (or not exist yet), and not where an input is read."""
    for folder, flag in ((output, "--output"), (report, "--report-dir")):
        check_output_folder(folder, flag, inputs)


def check_output_folder(folder: Path, flag: str, inputs: list[Path]) -> None:
    """UserError if ``folder`` (resolved) is a file, or equals or lies inside an input folder, where it would
    be read as input (a hidden folder there is not read, so it is allowed)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder", hint=f"pass another {flag}")
    for source in (p.resolve() for p in inputs):
        if source.is_dir() and (folder == source or source in folder.parents):
            if not hidden(folder.relative_to(source)):  # a hidden folder is not read as input
                raise UserError(
                    f"{folder} is inside the input folder {source}",
                    hint=f"pass a {flag} outside the input: a later run would read the results as input",
                )


def count_items(batch: MiniBatch) -> int:
    """Items in a mini-batch the worker never reported on (it crashed before reading it)."""
    if batch.kind == "file":
        return len(batch.files)
    with open(batch.path, "rb") as fh:  # one mini-batch (about mini_batch_size bytes), not the file
        fh.seek(batch.start)
        data = fh.read(batch.end - batch.start)
    return sum(1 for line in data.split(b"\n") if line.strip())
