"""What `embedtab fit-workflow` and `embedtab transform` are asked to do.

Each field is the one declaration of an option (embedtab.options). This module imports nothing
heavy (`embedtab --help` reads these declarations).
"""

from __future__ import annotations

from dataclasses import dataclass

from embedtab import bounds
from embedtab.bounds import PartSize
from embedtab.options import DASK_SCHEDULER, FORCE, TRUST_WORKFLOW, help_of, option


@dataclass
class FitOptions:
    config: str = option(help="Workflow YAML (see configs/).", recipe=True)
    data: bounds.Paths = option(help="Input parquet/csv: file, glob or directory (repeatable).", recipe=True)
    name: bounds.Name | None = option(None, "Workflow artifact name (default: the config's name).")
    force: bool = option(False, FORCE)
    dask_scheduler: bounds.SchedulerAddress | None = option(None, DASK_SCHEDULER)
    # Dask partition bytes ("256MB" is parsed when the options are made)
    part_size: PartSize | None = option(None, "Dask partition size, e.g. 256MB (bounds memory): from 1MB to the machine's RAM.")

    def __post_init__(self) -> None:
        bounds.check(self)


@dataclass
class TransformOptions:
    workflow: str = option(help="Name of a fitted workflow artifact (or, with --trust-workflow, a folder).", recipe=True)
    data: bounds.Paths = option(help=help_of(FitOptions, "data"), recipe=True)
    name: bounds.Name | None = option(None, "Dataset artifact name (default: the workflow's name).")
    force: bool = option(False, FORCE)
    part_size: PartSize | None = option(None, help_of(FitOptions, "part_size"))
    mask: bool = option(False, "Apply the config's cold-start masking (training data only; never the default).", recipe=True)
    dask_scheduler: bounds.SchedulerAddress | None = option(None, DASK_SCHEDULER)
    trust_workflow: bool = option(False, TRUST_WORKFLOW)

    def __post_init__(self) -> None:
        bounds.check(self)
