"""Azure ML SDK v2 tools: python -m pipelines.v2 VERB ... (each verb has --help).

export FILE.py:CALLABLE --out DIR   anyone's SDK v1 steps as SDK v2 YAML
run pipeline.yml                    an SDK v2 pipeline job on the local engine
show pipeline.yml                   the plan it makes, offline
"""

from __future__ import annotations

import importlib
import sys

from pipelines.errors import UserError, cli_main

# verb -> (module, function taking argv)
VERBS = {
    "export": ("pipelines.v2.export", "main"),
    "run": ("pipelines.v2.local_run", "run"),
    "show": ("pipelines.v2.local_run", "show"),
}


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip() + "\nverbs: " + ", ".join(VERBS))
        return 0 if args else 2
    if args[0] not in VERBS:
        raise UserError(f"unknown verb {args[0]!r}", hint="use one of " + ", ".join(VERBS))
    module, function = VERBS[args[0]]
    return getattr(importlib.import_module(module), function)(args[1:])


if __name__ == "__main__":
    from pipelines.cli import exit_now

    exit_now(main())
