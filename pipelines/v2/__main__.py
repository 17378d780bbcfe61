"""Azure ML SDK v2 tools: python -m pipelines.v2 VERB ... (amlops v2 VERB; each verb has --help).

export FILE.py:CALLABLE --out DIR   anyone's SDK v1 steps as SDK v2 YAML
run pipeline.yml                    an SDK v2 pipeline job on the local engine
show pipeline.yml                   the plan it makes, offline
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipelines.errors import cli_main

# verb -> (module, function taking the verb's own argv, one-line help); each module has parser(verb)
VERBS = {
    "export": ("pipelines.v2.export", "main", "write anyone's SDK v1 steps as SDK v2 YAML"),
    "run": ("pipelines.v2.local_run", "run", "run an SDK v2 pipeline job YAML on the local engine"),
    "show": ("pipelines.v2.local_run", "show", "print the plan an SDK v2 pipeline job YAML makes, offline"),
}


def parser() -> argparse.ArgumentParser:
    """One parser with a sub-parser per verb, built from the verbs' own parsers (for --help and completion)."""
    lines = (__doc__ or "").strip().splitlines()
    top = argparse.ArgumentParser(
        prog="python -m pipelines.v2", description=lines[0],
        epilog="\n".join(lines[2:]), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    verbs = top.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module, _, help_text) in VERBS.items():
        own = importlib.import_module(module).parser(verb)
        verbs.add_parser(verb, parents=[own], add_help=False, help=help_text, description=own.description)
    return top


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser().parse_args(args)  # usage errors and --help, for the whole command line, exit 2 / 0 here
    module, function, _ = VERBS[args[0]]
    return getattr(importlib.import_module(module), function)(args[1:])


if __name__ == "__main__":
    from pipelines.cli import exit_now

    exit_now(main())
