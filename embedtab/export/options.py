"""What `embedtab export triton` is asked to do (the stage is embedtab.export.triton).

Each field is the one declaration of an option (embedtab.options). This module imports nothing
heavy (`embedtab --help` reads these declarations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embedtab import bounds
from embedtab.bounds import ModelVersion, Name, Versions
from embedtab.errors import UsageError
from embedtab.options import FORCE, option


@dataclass
class ExportOptions:
    name: Name = option("triton", "The model repository's artifact name: it is written to exports/<name>/.")
    lookups: Sequence[str] = option(
        factory=list, help="Lookup artifacts to serve, one model each (repeat; default: every lookup).", recipe=True, aliases=("lookup",)
    )
    workflows: Sequence[str] = option(
        factory=list,
        help="Workflow artifacts to serve as merlin-systems TransformWorkflow models (repeat; default: every workflow).",
        recipe=True,
        aliases=("workflow",),
    )
    version: ModelVersion | None = option(None, "The version number to write (default: one above the newest); an existing one is refused.")
    keep: Versions = option(3, "Versions kept when a version is written, the newest first (Triton serves the newest).")
    force: bool = option(False, FORCE)

    def __post_init__(self) -> None:
        for field in ("lookups", "workflows"):
            value = getattr(self, field)
            setattr(self, field, [value] if isinstance(value, str) else list(value))
        self.check()

    def check(self) -> None:
        bounds.check(self)
        for field in ("lookups", "workflows"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise UsageError(f"{field}: an artifact is given twice")
