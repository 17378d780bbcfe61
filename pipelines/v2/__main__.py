"""Azure ML SDK v2 tools: python -m pipelines.v2 VERB ... (each verb has --help)."""

from __future__ import annotations

import importlib
import sys

from pipelines.errors import UserError, cli_main

# verb -> the module whose main(argv) runs it
VERBS = {"export": "pipelines.v2.export"}


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip() + "\nverbs: " + ", ".join(VERBS))
        return 0 if args else 2
    if args[0] not in VERBS:
        raise UserError(f"unknown verb {args[0]!r}", hint="use one of " + ", ".join(VERBS))
    return importlib.import_module(VERBS[args[0]]).main(args[1:])


if __name__ == "__main__":
    from pipelines.cli import exit_now

    exit_now(main())
