"""NVTabular, opened safely: whether it is installed, its import warnings silenced, and a fitted
workflow loaded only after its files are verified.

Trust model: `Workflow.load` unpickles (CVE-2025-33214 in nvtabular 23.8), i.e. runs code from
workflow.pkl. embedtab records every file's sha256 when it saves a workflow and `load_workflow`
verifies them -- no changed, missing or extra file -- before NVTabular unpickles anything. A
workflow folder embedtab did not write is refused unless the caller passes `trust=True`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedtab.artifacts import ArtifactRecord, ArtifactStore
from embedtab.errors import DataError, UsageError


def merlin_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("nvtabular", "merlin", "dask"))


def require_merlin(command: str) -> None:
    """NVTabular is an extra (its last release stops at Python 3.11 and numpy 1): say how to get it."""
    if not merlin_installed():
        raise UsageError(
            f"{command} needs NVTabular, which is not installed in this Python: pip install 'embedtab[merlin]' "
            "(Python 3.10-3.11), or run it in a Merlin container on the same artifact directory "
            "(encode, reduce, lookup and status work without it)"
        )


@contextlib.contextmanager
def quiet_merlin() -> Iterator[None]:
    """Merlin warns on import about TensorFlow/Triton being absent and on CPU-only runs; not our users' concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"merlin\..*|nvtabular\..*")
        warnings.filterwarnings(
            "ignore", category=UserWarning, message=r".*(Tensorflow|Triton|GPU|cudf|dask_cudf|num_buckets|hash-based).*"
        )
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # Merlin's executor logs a whole traceback before it re-raises; the error reaches the user
        # as one line (with --debug, with its traceback), so the log would only say it twice.
        log = logging.getLogger("merlin")
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            log.setLevel(level)


def external_folder(name: str) -> Path | None:
    """A workflow given as a folder path rather than an artifact name (artifact names have no '/')."""
    return Path(name) if ("/" in name or os.sep in name) and Path(name).is_dir() else None


def load_workflow(store: ArtifactStore, name: str, trust: bool = False) -> tuple[Any, ArtifactRecord | None]:
    """Verify every file against the sha256 recorded at fit time, then let NVTabular unpickle.

    `name` may also be a path to a workflow folder embedtab did not write: refused unless trust.
    """
    external = external_folder(name)
    if external is not None:
        if not trust:
            raise UsageError(
                f"{external} is a workflow folder embedtab did not write; loading it runs code from its "
                "workflow.pkl. Pass --trust-workflow only if you trust whoever wrote it"
            )
        path, record = external, None
    else:
        record = store.require("workflows", name)
        path = store.path("workflows", name) if trust else store.verify(record)
    with quiet_merlin():
        import nvtabular as nvt

        try:
            return nvt.Workflow.load(str(path)), record
        except Exception as exc:  # noqa: BLE001 - a trusted folder that is not a workflow
            raise DataError(f"{path}: not a loadable NVTabular workflow ({type(exc).__name__}: {exc})") from None


def categorify_paths(workflow: Any) -> dict[str, str]:
    """Column -> unique-values parquet of every Categorify in a (loaded) workflow."""
    from merlin.dag import Graph
    from nvtabular.ops import Categorify

    found: dict[str, str] = {}
    for node in Graph.get_nodes_by_op_type([workflow.output_node], Categorify):
        found.update(node.op.categories)
    return found


def null_hint(exc: BaseException) -> str:
    """What NVTabular's message hides when a null id meets a given (or grown) vocabulary: its
    Categorify casts the column to integers and fails on the null."""
    cause = exc.__cause__ or exc.__context__
    if cause is not None and "non-finite values (NA or inf) to integer" in str(cause):
        return " (a null id: NVTabular 23.08 cannot encode nulls against a given or grown vocabulary; drop or fill them)"
    return ""
