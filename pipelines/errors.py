"""The one error type for bad input, the CLI wrapper that turns it into a one-line message + exit 2, and
argparse types for numbers that must lie in a range (argparse then reports them as its usage errors)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad input from the user: printed as one line with a hint, exit status 2, no traceback."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def cli_main(func: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI ``main(argv)``: UserError -> one line on stderr + exit 2 (traceback only with --debug).

    ``--debug`` and ``--json`` are the command's own only before a ``--``: what follows it belongs to a
    script the command runs, and is passed on unchanged.
    """

    @functools.wraps(func)
    def wrapper(argv: list[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        cut = args.index("--") if "--" in args else len(args)
        own, rest = args[:cut], args[cut:]
        debug = "--debug" in own or os.environ.get("AMLOPS_DEBUG") == "1"
        try:
            return func([a for a in own if a != "--debug"] + rest) or 0
        except UserError as exc:
            if debug:
                raise
            if "--json" in own:
                print(json.dumps({"error": exc.message, "hint": exc.hint}))
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def int_in_range(low: int, high: int | None = None, what: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high`` (no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"expected {what or 'an integer'} {span}, got {value}")
        return value

    return parse


PORT = int_in_range(0, 65535, "a port")


def refuse_empty_options(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> None:
    """UserError for an option given as an empty value (``--name ""``), which would otherwise read as left
    out and silently mean the default; options whose default is itself empty are left alone. ``argv`` (what
    was parsed) names the option as the user typed it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                refuse_empty_options(chosen, args, argv)
            continue
        value = getattr(args, action.dest, None)
        if action.option_strings and action.default != "" and isinstance(value, str) and not value.strip():
            tokens = [a.split("=", 1)[0] for a in argv if a.startswith("--") and len(a.split("=", 1)[0]) > 2]
            typed = [
                o for t in tokens for o in action.option_strings if o.startswith(t)
            ]  # argparse's abbreviations
            if not typed:  # another option with the same destination holds the value
                continue
            flag = typed[-1]
            raise UserError(
                f"{flag} is empty", hint=f"give {flag} a value, or leave the option out for its default"
            )
