"""Taking back what a multi-step operation created when a later step fails: newest first, each step once.

A step records how to take back what it is about to create *before* it asks for it (a refused or timed-out
request may still have created it); taking back something that was never created is not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Undo:
    """What an operation created so far, each with the action that takes it back."""

    steps: list[tuple[str, str, Callable[[], None]]] = field(default_factory=list)

    def add(self, how: str, what: str, action: Callable[[], None]) -> None:
        """Record ``action``, which takes ``what`` back (``how``: ``deleted``, ``archived``, ``restored``)."""
        self.steps.append((how, what, action))

    def run(self, gone: tuple[type[BaseException], ...], describe: Callable[[Exception], str]) -> list[str]:
        """Take everything back, newest first: what was done, and what could not be (``describe``d).

        An action raising one of ``gone`` found nothing to take back (the step's own request failed before
        creating it) and is left out of the answer.
        """
        said = []
        for how, what, action in reversed(self.steps):
            try:
                action()
            except gone:
                continue
            except Exception as exc:  # keep undoing the rest; say what is left behind
                said.append(f"could not be {how}: {what} ({describe(exc)})")
                continue
            said.append(f"{how} {what}")
        self.steps.clear()
        return said
