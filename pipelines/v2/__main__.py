"""``python -m pipelines.v2 VERB ...``: SDK v2 pipeline jobs (YAML) on the local engine.

Verbs: run, show. Each takes ``--help``.
"""

from __future__ import annotations

import sys

from pipelines.cli import exit_now
from pipelines.v2 import local_run

VERBS = {"run": local_run.run, "show": local_run.show}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in VERBS:
        print(__doc__.strip(), file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        if args and args[0] not in ("-h", "--help"):
            print(f"error: unknown verb {args[0]!r} (verbs: {', '.join(VERBS)})", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return VERBS[args[0]](args[1:])


if __name__ == "__main__":
    exit_now(main())
