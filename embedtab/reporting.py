"""How the core tells the outside world what it is doing, without knowing about terminals.

The CLI supplies a Reporter that draws rich progress bars; library users get the silent default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Advance = Callable[[int], None]


class Reporter:
    """Silent reporter; subclass to show messages and progress."""

    def info(self, message: str) -> None:
        """A line worth showing a human (not data: data goes to stdout via the CLI)."""

    def warn(self, message: str) -> None:
        """Something the user should know about that did not stop the stage."""

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None, unit: str = "items") -> Iterator[Advance]:
        """Context for a long loop; call the yielded function with the number of units done."""
        yield lambda n: None


SILENT = Reporter()
