"""`embedtab reduce`: PCA of an embeddings artifact, with a saved, re-appliable projection.

A fit writes two artifacts:
    projections/<name>/   projection.npz (mean, components, explained variance, whiten, normalize;
                          no pickle) + projection.json (dims, backend, source fingerprint, curve)
    embeddings/<name>/    the source's ids with the reduced `embedding`, part for part

`--apply` projects another embeddings artifact with a saved projection (the daily new items).
Reading, fitting (streaming backend) and transforming go part by part, so memory stays bounded.

This module holds the two entry points, from the plans to the publication, and decides the
backend, the device and the memory budget; the work is in
    options.py    ReduceOptions and ApplyOptions: every option declared once
    fit.py        one streaming read of the fit input, keeping rows for the transform
    transform.py  the projection, part by part, in fixed blocks (the same bits on any machine)
    rows.py       what both share: the id column, the NaN/inf check, threads and batch buffers
    pca.py        the arithmetic: moments, spectrum, the saved projection
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedtab import bounds, tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore, Driver, Made, RunMode
from embedtab.device import array_module, gpu_arrays_available
from embedtab.errors import DataError, UsageError
from embedtab.reduce.fit import FitSetup, fit_pass, sample_rows

# Re-exported: names this module held before the fit and the transform moved out.
from embedtab.reduce.fit import Kept as Kept
from embedtab.reduce.options import BACKENDS as BACKENDS  # (the options live in options.py; re-exported)
from embedtab.reduce.options import ReduceOptions, check_backend, parse_memory
from embedtab.reduce.pca import Projection, Spectrum
from embedtab.reduce.transform import BLOCK as BLOCK
from embedtab.reduce.transform import embeddings_meta, project_parts, write_sidecars
from embedtab.reduce.update import Kept as KeptReduction
from embedtab.reduce.update import Reuse, copy_projection, kept_reduction, refuse_damaged_projection, write_source_keys
from embedtab.reporting import SILENT, Reporter

IN_MEMORY_LIMIT = 256 * 2**20  # auto: inputs above this (as float32) stream on the CPU
MEMORY_SHARE = 1 / 32  # default --memory: rows kept between the fit and the transform, as a share of RAM
_PACKAGES = ("numpy", "scikit-learn", "cuml", "cupy")


@dataclass
class ReduceResult:
    projection: ArtifactRecord
    embeddings: ArtifactRecord
    up_to_date: bool


# ----------------------------------------------------------------------------- choices
def choose_backend(requested: str, nbytes: int) -> str:
    check_backend(requested)
    gpu = gpu_arrays_available() and _cuml_importable()
    if requested == "cuml" and not gpu:
        raise UsageError("--backend cuml needs cuML and a CUDA device; use --backend sklearn or streaming")
    if requested != "auto":
        return requested
    if gpu:
        import cupy

        free, _ = cupy.cuda.runtime.memGetInfo()
        return "cuml" if nbytes * 4 < free else "streaming"  # float64 copy plus work space
    return "sklearn" if nbytes <= IN_MEMORY_LIMIT else "streaming"


def _cuml_importable() -> bool:
    try:
        import cuml  # noqa: F401

        return True
    except Exception:
        return False


def _keep_rows(memory: int | None, dim: int, device: str, backend: str) -> int:
    """How many fitted rows may stay in memory for the transform: --memory (host), or half the free
    device memory when the rows live on the GPU."""
    if device == "cuda" and backend == "streaming":
        import cupy

        free, _ = cupy.cuda.runtime.memGetInfo()
        budget = free // 2 if memory is None else min(memory, free // 2)
    else:
        budget = default_memory() if memory is None else memory
    return int(budget // (dim * 4))


physical_memory = bounds.machine_memory  # bytes of RAM this process may use (the cgroup's limit when lower)


def default_memory() -> int:
    """--memory when not given: a share of RAM (see MEMORY_SHARE)."""
    return int(physical_memory() * MEMORY_SHARE)


# ----------------------------------------------------------------------------- entry points
@dataclass
class _Reduction:
    """One reduce run as decided before its plans: what is fitted on, with which backend."""

    source: ArtifactRecord
    fit_record: ArtifactRecord  # the source, or the --fit-on artifact
    in_dim: int
    sample_size: int | None  # --fit-on N: a sample of the source
    total: int  # rows of fit_record
    fit_rows: int  # rows the fit reads
    backend: str  # never auto
    memory: int | None  # --memory in bytes
    name: str
    params: dict[str, Any]  # the recipe both plans record


def _reduction(store: ArtifactStore, options: ReduceOptions) -> _Reduction:
    """Everything run decides before its plans; every refusal (an empty or mismatched input, dims
    out of range) comes here, before any work."""
    source = store.require("embeddings", options.source)
    in_dim = int(source.metadata.get("dim", 0))
    fit_record, sample_size = _fit_input(store, options, source, in_dim)
    total = fit_record.rows(prefix=tables.PART_PREFIX)
    fit_rows = min(total, sample_size) if sample_size else total
    if fit_rows == 0:
        raise DataError(f"embeddings {fit_record.name!r} have no rows")
    _check_dims(options, in_dim, fit_rows)
    backend = choose_backend(options.backend, fit_rows * in_dim * 4)
    memory = parse_memory(options.memory)
    params = {
        "source": options.source,
        "dims": options.dims,
        "variance": options.variance,
        "whiten": options.whiten,
        "normalize": options.normalize,
        "fit_on": options.fit_on,
        "seed": options.seed,
        "method": "pca-exact",
    }
    return _Reduction(source, fit_record, in_dim, sample_size, total, fit_rows, backend, memory, options.output_name, params)


def _fit_input(store: ArtifactStore, options: ReduceOptions, source: ArtifactRecord, in_dim: int) -> tuple[ArtifactRecord, int | None]:
    """(what the PCA is fitted on, sample size): the source, a sample of it, or another embeddings
    artifact of the same dims (--fit-on)."""
    if not options.fit_on:
        return source, None
    if not isinstance(options.fit_on, str):  # made a str with the options (ReduceOptions.__post_init__)
        raise AttributeError(f"{type(options.fit_on).__name__!r} object has no attribute 'isdigit'")
    if options.fit_on.isdigit():  # (at least 2: checked with the options)
        return source, int(options.fit_on)
    fit_record = store.require("embeddings", options.fit_on)
    if int(fit_record.metadata.get("dim", 0)) != in_dim:
        raise DataError(f"--fit-on {options.fit_on!r} has {fit_record.metadata.get('dim')} dims, {options.source!r} has {in_dim}")
    return fit_record, None


def _check_dims(options: ReduceOptions, in_dim: int, fit_rows: int) -> None:
    """--dims or --variance, one of them; dims fewer than the input's and than the rows fitted on."""
    if (options.dims is None) == (options.variance is None):
        raise UsageError("give either --dims or --variance")
    if options.dims is not None:
        if options.dims < 1 or options.dims >= in_dim:
            raise UsageError(f"--dims {options.dims} must be between 1 and {in_dim - 1} (the input has {in_dim} dims)")
        if options.dims >= fit_rows:
            raise UsageError(f"--dims {options.dims} needs more than {options.dims} rows to fit on; there are {fit_rows}")


def _projection(spectrum: Spectrum, options: ReduceOptions, in_dim: int) -> tuple[int, Projection]:
    """(dims, projection): --dims components, or the fewest reaching --variance."""
    if options.dims is not None:
        dims = options.dims
    elif options.variance is not None:
        dims = spectrum.dims_for(options.variance)
    else:  # (refused before the fit: _check_dims)
        raise UsageError("give either --dims or --variance")
    if dims >= in_dim and options.variance is not None:
        dims = in_dim  # reaching that share needs every component: keep them all
    return dims, spectrum.projection(dims, options.whiten, options.normalize)


def _curve(ratio: np.ndarray) -> dict[str, float]:
    """Cumulative explained variance at 1, 2, 4, ... components and at the chosen count."""
    cumulative = np.cumsum(ratio)
    points = sorted({min(2**i, len(ratio)) for i in range(int(np.log2(max(len(ratio), 1))) + 1)} | {len(ratio)})
    return {str(k): round(float(cumulative[k - 1]), 4) for k in points}


def _projection_info(
    job: _Reduction, options: ReduceOptions, dims: int, spectrum: Spectrum, projection: Projection, device: str, kept_rows: int
) -> dict[str, Any]:
    """projection.json and the projection artifact's metadata."""
    variance_kept = float(projection.explained_variance_ratio.sum())
    info = {
        "dims": dims,
        "input_dim": job.in_dim,
        "whiten": options.whiten,
        "normalize": options.normalize,
        "backend": job.backend,
        "source": {"name": job.source.name, "fingerprint": job.source.fingerprint},
        "fit_on": {
            "name": job.fit_record.name,
            "fingerprint": job.fit_record.fingerprint,
            "rows": spectrum.rows,
            "sample": job.sample_size,
            "seed": options.seed if job.sample_size else None,
        },
        "explained_variance_ratio_total": round(variance_kept, 6),
        "explained_variance_ratio": [round(float(v), 6) for v in projection.explained_variance_ratio],
        "explained_variance_curve": _curve(projection.explained_variance_ratio),
    }
    info["device"] = device
    info["kept_in_memory"] = round(kept_rows / job.total, 4) if job.total else 0.0  # share of rows not read twice
    return info


def run(store: ArtifactStore, options: ReduceOptions, reporter: Reporter = SILENT, mode: RunMode | None = None) -> ReduceResult:
    """Fit a PCA on the source (or --fit-on) and project the source with it: both artifacts or
    neither. Over an earlier run of the same command whose source changed, the saved projection is
    re-applied instead of refitted (update.py); --force refits."""
    job = _reduction(store, options)
    fit_inputs = [job.source] if job.fit_record is job.source else [job.source, job.fit_record]
    refuse_damaged_projection(store, job.name, job.fit_record, options.force)
    kept = kept_reduction(store, job.name, job.params, options.force, job.source, job.fit_record)
    driver = Driver(store, mode)
    plans = [
        driver.plan(
            kind,
            job.name,
            stage,
            job.params,
            input_artifacts=fit_inputs,
            force=options.force,
            packages=_PACKAGES,
            refresh=kept is not None,  # a grown source updates the reduction
            warn=reporter.warn,
        )
        for kind, stage in (("projections", "reduce fit"), ("embeddings", "reduce transform"))
    ]
    if kept is not None:
        built = driver.build(plans, lambda staging: _update(store, job, kept, staging, reporter))
    else:
        built = driver.build(plans, lambda staging: _fit_and_transform(store, job, options, staging, reporter))
    projection, embeddings = built.records
    return ReduceResult(projection, embeddings, built.up_to_date)


def _update(store: ArtifactStore, job: _Reduction, kept: KeptReduction, staging: list[Path], reporter: Reporter) -> list[Made]:
    """The kept projection into staging[0], unchanged; the source projected with it into
    staging[1], unchanged items with their earlier vectors."""
    store.verify(job.source)  # a damaged input is refused, never projected
    proj_staging, emb_staging = staging
    copy_projection(store, kept, proj_staging)
    projection = Projection.load(proj_staging)
    reporter.info(f"updating {job.name!r}: the saved projection applied to {job.source.name!r} (not refitted; --force refits)")
    started = time.time()
    use_gpu = gpu_arrays_available()
    reuse = Reuse(store, kept, job.source)
    rows = project_parts(store, job.source, projection, emb_staging, array_module(use_gpu), None, reporter, reuse)
    meta = embeddings_meta(job.source, job.name, projection)
    write_sidecars(emb_staging, meta)
    write_source_keys(store, job.source, emb_staging)
    device = "cuda" if use_gpu else "cpu"
    summary = {"rows": rows, "reused": len(reuse.index), "seconds": round(time.time() - started, 3), "refitted": False}
    return [Made(dict(kept.projection.metadata), {"fit_seconds": 0.0, "kept": True}, device), Made(meta, summary, device)]


def _fit_and_transform(
    store: ArtifactStore, job: _Reduction, options: ReduceOptions, staging: list[Path], reporter: Reporter
) -> list[Made]:
    """The projection into staging[0] and the source projected with it into staging[1]. The
    transform runs before anything is published: a NaN in the rows to transform leaves nothing behind."""
    for record in {job.source.name: job.source, job.fit_record.name: job.fit_record}.values():
        store.verify(record)  # a damaged input is refused, never fitted on
    device = "cuda" if job.backend == "cuml" or (job.backend == "streaming" and gpu_arrays_available()) else "cpu"
    xp = array_module(device == "cuda")
    reuse = job.fit_record is job.source and not job.sample_size  # only then can kept rows spare the transform a read
    keep_rows = _keep_rows(job.memory, job.in_dim, device, job.backend) if reuse else 0
    reporter.info(
        f"fitting PCA on {job.fit_rows:,} x {job.in_dim} ({'sample of ' + options.source if job.sample_size else job.fit_record.name}) "
        f"with {job.backend} on {device}"
    )
    started = time.time()
    sample = sample_rows(job.total, job.sample_size, options.seed) if job.sample_size else None
    spectrum, kept = fit_pass(store, FitSetup(job.fit_record, sample, job.backend, job.in_dim, xp, keep_rows, reuse), reporter)
    dims, projection = _projection(spectrum, options, job.in_dim)
    fit_seconds = time.time() - started
    kept_rows = sum(count for _, _, count, _ in kept.parts) if kept is not None else 0
    info = _projection_info(job, options, dims, spectrum, projection, device, kept_rows)
    proj_staging, emb_staging = staging
    projection.save(proj_staging, info)
    rows = project_parts(store, job.source, projection, emb_staging, xp, kept, reporter)
    del kept
    meta = embeddings_meta(job.source, job.name, projection)
    write_sidecars(emb_staging, meta)
    write_source_keys(store, job.source, emb_staging)
    return [
        Made(info, {"fit_seconds": round(fit_seconds, 3)}, device),
        Made(meta, {"rows": rows, "seconds": round(time.time() - started, 3)}, device),
    ]


def apply(
    store: ArtifactStore,
    projection_name: str,
    source_name: str,
    name: str | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
    mode: RunMode | None = None,
) -> tuple[ArtifactRecord, bool]:
    """Project `source_name` with the saved projection `projection_name` (new items, same space)."""
    proj_record = store.require("projections", projection_name)
    source = store.require("embeddings", source_name)
    projection = Projection.load(store.verify(proj_record))
    if int(source.metadata.get("dim", 0)) != projection.input_dim:
        raise DataError(
            f"embeddings {source_name!r} have {source.metadata.get('dim')} dims; projection "
            f"{projection_name!r} was fitted on {projection.input_dim}"
        )
    name = name or f"{source_name}-{projection_name}"
    params = {"apply": projection_name, "source": source_name}
    driver = Driver(store, mode)
    plan = driver.plan(
        "embeddings",
        name,
        "reduce apply",
        params,
        input_artifacts=[source, proj_record],
        force=force,
        packages=("numpy",),
        refresh=True,
        warn=reporter.warn,
    )

    def make(staging: list[Path]) -> list[Made]:
        store.verify(source)  # a damaged input is refused, never projected
        started = time.time()
        use_gpu = gpu_arrays_available()
        rows = project_parts(store, source, projection, staging[0], array_module(use_gpu), None, reporter)
        meta = embeddings_meta(source, projection_name, projection)
        write_sidecars(staging[0], meta)
        summary = {"rows": rows, "seconds": round(time.time() - started, 3)}
        return [Made({**meta, "projection_fingerprint": proj_record.fingerprint}, summary, "cuda" if use_gpu else "cpu")]

    built = driver.build([plan], make)
    return built.record, built.up_to_date
