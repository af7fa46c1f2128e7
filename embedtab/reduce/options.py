"""What `embedtab reduce` is asked to do: `ReduceOptions` (a fit) and `ApplyOptions` (`--apply`,
a stage of its own in pipeline files), with the checks that run when they are made.

Each field is the one declaration of an option (embedtab.options). This module imports nothing
heavy (`embedtab --help` reads these declarations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from embedtab import bounds
from embedtab.bounds import Dims, Seed, Variance
from embedtab.errors import UsageError
from embedtab.options import FORCE, help_of, option

BACKENDS = ("auto", "sklearn", "cuml", "streaming")
DEFAULT_DIMS = 64  # --dims when neither --dims nor --variance is given


@dataclass
class ReduceOptions:
    source: str = option(help="Name of the embeddings artifact to reduce (or, with --apply, to project).", recipe=True)
    dims: Dims | None = option(
        None, f"Output dimensions, 1 to 65,536 and fewer than the input's (default {DEFAULT_DIMS} unless --variance).", recipe=True
    )
    name: bounds.Name | None = option(
        None, "Output name for the projection and the embeddings (default: SOURCE-pcaDIMS; with --apply: SOURCE-PROJECTION)."
    )
    backend: str = option("auto", "auto (cuML on GPU; scikit-learn for small inputs; else streaming), sklearn, cuml or streaming.")
    whiten: bool = option(False, "Scale components to unit variance.", recipe=True)
    normalize: bool = option(
        False,
        "L2-normalize after projecting: use it when the consumer compares vectors by cosine or dot product "
        "(retrieval, FAISS); leave it off for features fed to a model.",
        recipe=True,
    )
    # instead of dims: the smallest dims reaching this share
    variance: Variance | None = option(None, "Instead of --dims: the fewest dims explaining this share, in (0, 1], e.g. 0.95.", recipe=True)
    # a sample size ("100000", made a str when checked) or another embeddings artifact
    fit_on: str | int | None = option(
        None, "Fit on a random sample of N rows (N >= 2), or on another embeddings artifact; transform all rows.", recipe=True
    )
    seed: Seed = option(0, "Seed of the --fit-on sample, 0 to 4,294,967,295.", recipe=True)
    # bytes ("4GB") of fitted rows kept for the transform (default: default_memory())
    memory: int | str | None = option(
        None,
        "RAM for fitted rows kept for the transform instead of read again, e.g. 4GB (0 to the machine's RAM; "
        "default 1/32 of it; 0 reads the input twice). On a GPU: half its free memory.",
    )
    force: bool = option(False, FORCE)

    def __post_init__(self) -> None:
        """Every option is checked when the options are made (CLI, API, pipeline files): see embedtab.bounds."""
        bounds.check(self)
        check_backend(self.backend)
        if self.dims is None and self.variance is None:
            self.dims = DEFAULT_DIMS
        if self.fit_on is not None:
            self.fit_on = _fit_on(self.fit_on)
        given, self.memory = self.memory, parse_memory(self.memory)
        if self.memory is not None and self.memory > bounds.machine_memory():
            most = f"at most this machine's memory ({bounds.human_size(bounds.machine_memory())})"
            raise UsageError(bounds.problem("memory", most, given))

    @property
    def output_name(self) -> str:
        if self.name:
            return self.name
        if self.variance is not None:
            return f"{self.source}-pca{round(self.variance * 100)}pct"
        return f"{self.source}-pca{self.dims}"


@dataclass
class ApplyOptions:
    """`reduce SOURCE --apply PROJECTION`: new items into a saved projection's space."""

    projection: bounds.Name = option(
        help="Project SOURCE with this saved projection instead of fitting (new items, same space).", recipe=True
    )
    source: str = option(help=help_of(ReduceOptions, "source"), recipe=True)
    name: bounds.Name | None = option(None, help_of(ReduceOptions, "name"))
    force: bool = option(False, FORCE)

    @property
    def output_name(self) -> str:
        return self.name or f"{self.source}-{self.projection}"


def _fit_on(value: str | int) -> str:
    """--fit-on: a sample size (2 rows or more) or the name of another embeddings artifact."""
    from embedtab.artifacts import check_name

    text = str(value).strip()
    if re.fullmatch(r"[0-9]+", text):
        if int(text) >= 2:
            return str(int(text))
    else:
        try:
            float(text)  # (a number, but not a whole count of rows: -5, 1.5, 1e5)
        except ValueError:
            try:
                return check_name(text, "artifact name")
            except UsageError as exc:
                raise UsageError(f"fit_on: {exc}") from None
    raise UsageError(bounds.problem("fit_on", "a sample of at least 2 rows, or the name of an embeddings artifact", value))


def check_backend(requested: str) -> str:
    if requested not in BACKENDS:
        raise UsageError(f"invalid --backend {requested!r}: use {', '.join(BACKENDS)}")
    return requested


def parse_memory(value: int | str | None) -> int | None:
    """--memory: bytes, or a size such as 512MB, 4GB, 4GiB (None: the default)."""
    if value is None:
        return None
    size = bounds.byte_size(value)
    if size is None or size < 0:
        raise UsageError(f"invalid --memory {value!r}: give bytes or a size such as 512MB or 4GB")
    return size
