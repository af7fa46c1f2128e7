"""What `embedtab lookup` is asked to do (the stage is embedtab.lookup).

Each field is the one declaration of an option (embedtab.options). This module imports nothing
heavy (`embedtab --help` reads these declarations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embedtab import bounds
from embedtab.bounds import Name, Share
from embedtab.errors import UsageError
from embedtab.options import FORCE, TRUST_WORKFLOW, option

FILLS = ("zeros", "mean")


@dataclass
class LookupOptions:
    embeddings: Sequence[str] | str = option(help="Embeddings artifact name (repeat for several, e.g. image and text).", recipe=True)
    workflow: str = option(help="Fitted workflow whose Categorify ids index the table.", recipe=True)
    column: Name = option("item_id", "Categorified id column.", recipe=True)
    name: Name | None = option(None, "Lookup artifact name (default: the embeddings' names joined by '+').")
    force: bool = option(False, FORCE)
    trust_workflow: bool = option(False, TRUST_WORKFLOW)
    concat: bool = option(False, "Several sources: one table of their vectors side by side (else one table each).", recipe=True)
    fill: str = option("zeros", "Rows without an embedding: zeros, or the mean of present rows (padding stays zero).", recipe=True)
    min_coverage: Share = option(
        0.0, "Fail (nothing written) when a source covers less of the vocabulary: a share from 0 to 1, e.g. 0.95.", recipe=True
    )
    min_reachable: Share = option(
        0.95,
        "Fail when the vocabulary holds a smaller share (0 to 1) of a source's encoded items (their vectors could never be looked up).",
        recipe=True,
    )

    def __post_init__(self) -> None:
        if isinstance(self.embeddings, str):
            self.embeddings = [self.embeddings]
        self.embeddings = list(self.embeddings)
        self.check()  # when made: the CLI, the Python API and pipeline files refuse the same values before any work

    def check(self) -> None:
        if self.fill not in FILLS:
            raise UsageError(f"invalid --fill {self.fill!r}: use zeros or mean")
        for flag, value in (("--min-coverage", self.min_coverage), ("--min-reachable", self.min_reachable)):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= 1:
                raise UsageError(f"{flag} is a share between 0 and 1, e.g. 0.95 (got {value})")
        bounds.check(self)  # (and what is not a number at all)
        if not self.embeddings:
            raise UsageError("embeddings: give at least one embeddings artifact")
        if len(set(self.embeddings)) != len(self.embeddings):
            raise UsageError("the same --embeddings artifact is given twice")

    @property
    def output_name(self) -> str:
        return self.name or "+".join(self.embeddings)
