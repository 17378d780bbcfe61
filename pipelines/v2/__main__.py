"""``python -m pipelines.v2 VERB ...``: SDK v2 pipeline jobs (YAML) with this project's engines.

Each verb takes ``--help``.
"""

from __future__ import annotations

import sys

from pipelines.cli import exit_now
from pipelines.v2 import local_run

VERBS = {"run": local_run.run, "show": local_run.show}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: python -m pipelines.v2 {{{','.join(VERBS)}}} ... (each verb takes --help)"
    if args and args[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not args or args[0] not in VERBS:
        print(usage, file=sys.stderr)
        print(f"error: {'unknown verb ' + repr(args[0]) if args else 'no verb given'}", file=sys.stderr)
        return 2
    return VERBS[args[0]](args[1:])


if __name__ == "__main__":
    exit_now(main())
