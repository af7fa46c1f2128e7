"""`embedtab reduce`: PCA of an embeddings artifact, with a saved, re-appliable projection.

A fit writes two artifacts:
    projections/<name>/   projection.npz (mean, components, explained variance, whiten, normalize;
                          no pickle) + projection.json (dims, backend, source fingerprint, curve)
    embeddings/<name>/    the source's ids with the reduced `embedding`, part for part

`--apply` projects another embeddings artifact with a saved projection (the daily new items).
Reading, fitting (streaming backend) and transforming go part by part, so memory stays bounded.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from embedtab import bounds, tables
from embedtab.artifacts import EMBEDDINGS_INFO, PARQUET_SUMMARY, ArtifactRecord, ArtifactStore, check_name
from embedtab.bounds import Dims, Seed, Variance
from embedtab.device import array_module, gpu_arrays_available, to_numpy
from embedtab.errors import DataError, UsageError
from embedtab.reduce.pca import Covariance, Projection, Spectrum, fit_cuml, fit_sklearn, shift_into
from embedtab.reporting import SILENT, Reporter

BACKENDS = ("auto", "sklearn", "cuml", "streaming")
IN_MEMORY_LIMIT = 256 * 2**20  # auto: inputs above this (as float32) stream on the CPU
MEMORY_SHARE = 1 / 32  # default --memory: rows kept between the fit and the transform, as a share of RAM
_PACKAGES = ("numpy", "scikit-learn", "cuml", "cupy")


@dataclass
class ReduceOptions:
    source: str
    dims: Dims | None = 64
    name: str | None = None
    backend: str = "auto"
    whiten: bool = False
    normalize: bool = False
    variance: Variance | None = None  # instead of dims: the smallest dims reaching this share
    fit_on: str | int | None = None  # a sample size ("100000", made a str when checked) or another embeddings artifact
    seed: Seed = 0
    memory: int | str | None = None  # bytes ("4GB") of fitted rows kept for the transform (default: default_memory())
    force: bool = False

    def __post_init__(self) -> None:
        """Every option is checked when the options are made (CLI, API, pipeline files): see embedtab.bounds."""
        bounds.check(self)
        check_backend(self.backend)
        if self.fit_on is not None:
            self.fit_on = _fit_on(self.fit_on)
        given, self.memory = self.memory, parse_memory(self.memory)
        if self.memory is not None and self.memory > bounds.machine_memory():
            raise UsageError(bounds.problem("memory", f"at most this machine's memory ({bounds.human_size(bounds.machine_memory())})", given))

    @property
    def output_name(self) -> str:
        if self.name:
            return self.name
        return f"{self.source}-pca{self.dims}" if self.variance is None else f"{self.source}-pca{round(self.variance * 100)}pct"


@dataclass
class ReduceResult:
    projection: ArtifactRecord
    embeddings: ArtifactRecord
    up_to_date: bool


# ----------------------------------------------------------------------------- inputs
def _id_column(record: ArtifactRecord) -> str:
    return record.metadata.get("id_column", "item_id")


class _Finite:
    """Counts rows with NaN/inf while streaming; reports the first ids."""

    def __init__(self, name: str):
        self.name, self.bad, self.first = name, 0, []

    def check(self, ids: pa.Array, x: np.ndarray) -> None:
        self.add(ids, ~np.isfinite(x).all(axis=1))

    def add(self, ids: pa.Array, bad: np.ndarray) -> None:
        """Record the rows flagged in `bad` (a boolean mask over `ids`)."""
        if bad.any():
            self.bad += int(bad.sum())
            self.first.extend(ids.filter(pa.array(bad)).to_pylist()[: 5 - len(self.first)])

    def raise_if_bad(self) -> None:
        if self.bad:
            raise DataError(f"embeddings {self.name!r}: {self.bad} rows hold NaN or inf (ids {self.first}); nothing was written")


def _fit_on(value: str | int) -> str:
    """--fit-on: a sample size (2 rows or more) or the name of another embeddings artifact."""
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


def _sample_rows(total: int, size: int, seed: int) -> np.ndarray | None:
    if size >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))


physical_memory = bounds.machine_memory  # bytes of RAM this process may use (the cgroup's limit when lower)


def parse_memory(value: int | str | None) -> int | None:
    """--memory: bytes, or a size such as 512MB, 4GB, 4GiB (None: the default)."""
    if value is None:
        return None
    size = bounds.byte_size(value)
    if size is None or size < 0:
        raise UsageError(f"invalid --memory {value!r}: give bytes or a size such as 512MB or 4GB")
    return size


def default_memory() -> int:
    """--memory when not given: a share of RAM (see MEMORY_SHARE)."""
    return int(physical_memory() * MEMORY_SHARE)


@dataclass
class Kept:
    """Rows of the fit pass kept for the transform: whole source parts, the first ones, in order,
    with the fit's shift subtracted (numpy on CPU, cupy on GPU)."""

    rows: Any
    parts: list[tuple[Path, int, int, pa.Array]]  # (source part, first row in `rows`, row count, ids)


def _readers(xp: Any) -> int:
    """Threads decoding parquet: every core beside a GPU (up to 8); on the CPU half of them (the rest compute)."""
    return tables.reader_threads() if xp is not np else max(1, tables.reader_threads() // 2)


def _computers() -> int:
    """Threads running the fit's BLAS products on the CPU: a core each, up to 8 (each holds a batch
    and a scratch buffer of 32 MB for 512 dims, so memory stays bounded on big machines)."""
    return max(1, min(8, os.cpu_count() or 1))


def _host_rows(rows: int, dim: int) -> np.ndarray:
    """An uninitialised (rows, dim) float32 array in ordinary 4 KB pages. numpy asks for huge pages
    for large arrays; on kernels that grant them only on request (THP "madvise", the common default)
    each 2 MB fault may stall on memory compaction, and beside the threads reading and multiplying
    that cost the fit a lot (measured keeping 600 MB: fit pass 4.1 s with huge pages, 3.6 s without)."""
    import mmap

    if rows * dim == 0:
        return np.empty((rows, dim), np.float32)
    anonymous = mmap.mmap(-1, rows * dim * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(anonymous, dtype=np.float32).reshape(rows, dim)  # the array keeps the mapping alive


class _Scratch:
    """A float32 batch buffer per thread, reused from batch to batch (no batch-sized temporaries)."""

    def __init__(self, xp: Any, dim: int):
        self.xp, self.dim, self.local = xp, dim, threading.local()

    def get(self, rows: int) -> Any:
        buffer = getattr(self.local, "buffer", None)
        if buffer is None or len(buffer) < rows:
            buffer = self.local.buffer = self.xp.empty((max(rows, tables.ROW_GROUP), self.dim), dtype=self.xp.float32)
        return buffer[:rows]


def _in_order(function: Any, items: Iterator, xp: Any) -> Iterator:
    """function(item) for every item, results in order. On the CPU on a thread per core (up to 8),
    each running single-threaded BLAS beside the parquet readers: multi-threaded BLAS calls wait for
    each other between calls (a 1M x 512 Gram product took 4.3 CPU-s on 2 threads, 3.4 on one), and
    the readers take whatever core is free. On a GPU in turn (the device does the work)."""
    if xp is not np:
        yield from map(function, items)
        return
    from threadpoolctl import threadpool_limits

    threads = _computers()
    with threadpool_limits(limits=1, user_api="blas"):
        yield from tables.ordered_map(function, items, workers=threads, ahead=threads)


def _fit(store: ArtifactStore, fit_record: ArtifactRecord, sample: np.ndarray | None, backend: str,
         dim: int, xp: Any, keep_rows: int, reporter: Reporter, reuse: bool) -> tuple[Spectrum, Kept | None]:
    """One read of the fit input. Every batch is shifted into a buffer: the rows kept for the
    transform while they fit in `keep_rows` (or all of them, for the in-memory backends), a
    scratch batch otherwise; the streaming backend computes the batch's Gram product from it.
    Batches are shifted and multiplied on several threads and added up in order (see _in_order).
    `reuse`: the fit input is the source, whole -- only then do kept rows spare the transform a read."""
    finite = _Finite(fit_record.name)
    gather = backend in ("sklearn", "cuml")
    total = len(sample) if sample is not None else fit_record.rows(prefix=tables.PART_PREFIX)
    capacity = total if gather else min(total, keep_rows)
    slab_xp = np if backend == "cuml" else xp  # cuML takes host rows
    kept = (_host_rows(capacity, dim) if slab_xp is np else xp.empty((capacity, dim), dtype=xp.float32)) if capacity else None
    covariance = Covariance(dim, slab_xp)
    scratch = _Scratch(slab_xp, dim)  # for the rows not kept
    position, part_start, keeping, current = 0, 0, capacity > 0, None
    parts: list[tuple[Path, int, int, pa.Array]] = []
    part_ids: list[pa.Array] = []

    def close_part() -> None:
        nonlocal part_start
        if keeping and current is not None and position > part_start:
            parts.append((current, part_start, position - part_start, pa.concat_arrays(part_ids)))
        part_start = position

    def batches() -> Iterator[tuple[pa.Array, Any, Any, int]]:
        """(ids, rows, where the kept rows go or None, rows read) in order; runs on this thread."""
        nonlocal position, keeping, current, part_ids
        offset = 0
        for ids, x, path in tables.iter_embeddings(store.path(fit_record.kind, fit_record.name), _id_column(fit_record),
                                                   workers=_readers(xp)):
            size = len(x)
            if path != current:
                close_part()
                current, part_ids = path, []
            if sample is not None:
                local = sample[(sample >= offset) & (sample < offset + size)] - offset
                ids, x = ids.take(pa.array(local)), x[local]
            offset += size
            n = len(x)
            if keeping and position + n > capacity:  # the budget ends inside this part: keep none of it
                keeping, position = False, part_start
            target = None
            if keeping:
                target = kept[position : position + n]
                position += n
                part_ids.append(ids)
            if n:
                covariance.set_shift(x)  # from the first rows, before any thread uses it
            yield ids, x, target, size
        close_part()

    def compute(batch: tuple[pa.Array, Any, Any, int]) -> tuple[pa.Array, int, int, Any, Any]:
        """(ids, rows, rows read, moments, mask of rows holding NaN/inf or None); drops the batch's
        Arrow memory as soon as it is done."""
        ids, x, target, size = batch
        if not len(x):
            return ids, 0, size, None, None
        if target is None:
            target = scratch.get(len(x))
        shift_into(x, covariance.shift, target, slab_xp)
        moments = covariance.moments(target, gram=not gather)
        finite_sums = bool(slab_xp.isfinite(moments[0]).all())  # NaN and inf reach the sums
        return ids, len(x), size, moments, None if finite_sums else ~np.isfinite(to_numpy(x)).all(axis=1)

    with reporter.progress("fitting PCA", total=fit_record.rows(prefix=tables.PART_PREFIX), unit="rows") as advance:
        for ids, n, size, moments, bad in _in_order(compute, batches(), slab_xp):
            if bad is not None:
                finite.add(ids, bad)  # the fit will be refused: find the rows
            elif moments is not None and not finite.bad:
                covariance.accumulate(n, *moments)
            advance(size)
    finite.raise_if_bad()
    shift = to_numpy(covariance.shift).astype(np.float64)
    if gather:
        rows = kept[:position]
        spectrum = fit_cuml(rows, shift) if backend == "cuml" else fit_sklearn(rows, shift)
    else:
        spectrum = covariance.spectrum()
    if not reuse or not parts:
        return spectrum, None  # kept rows are a sample or another artifact (or none): the transform reads the source
    return spectrum, Kept(kept[:position], parts)


# ----------------------------------------------------------------------------- transform
# The projection is computed in blocks of BLOCK rows counted from each part's first row, with
# single-threaded BLAS: a row's result then never depends on how the rows were read (kept from
# the fit or read again, row group sizes) or on the number of cores. Multi-threaded BLAS splits a
# product by thread count, and some CPU kernels (OpenBLAS's Prescott) round a row differently by
# its place in the block, so anything else moves the last bits (measured: 52 % of values up to
# 5e-5 apart between 1 and 2 BLAS threads on Prescott).
BLOCK = tables.ROW_GROUP


def _blocks(batches: Iterator[tuple[pa.Array, np.ndarray, Path]]) -> Iterator[tuple[pa.Array, np.ndarray, Path]]:
    """The batches regrouped into BLOCK rows from each part's start (the last of a part shorter).
    Parts written by embedtab have row groups of BLOCK rows: those pass through without a copy."""
    pending: list[tuple[pa.Array, np.ndarray]] = []
    held, current = 0, None

    def flush(rows: int) -> tuple[pa.Array, np.ndarray, Path]:
        nonlocal pending, held
        ids = pa.concat_arrays([i for i, _ in pending]) if len(pending) > 1 else pending[0][0]
        x = np.concatenate([v for _, v in pending]) if len(pending) > 1 else pending[0][1]
        pending = [(ids.slice(rows), x[rows:])] if rows < len(x) else []
        held = len(x) - rows
        return ids.slice(0, rows), x[:rows], current

    for ids, x, path in batches:
        if not len(x):
            continue
        if path != current and held:
            yield flush(held)
        current = path
        if not held and len(x) == BLOCK:
            yield ids, x, path
            continue
        pending.append((ids, x))
        held += len(x)
        while held >= BLOCK:
            yield flush(BLOCK)
    if held:
        yield flush(held)




def _transform(store: ArtifactStore, source: ArtifactRecord, projection: Projection, staging: Path,
               xp: Any, kept: Kept | None, reporter: Reporter) -> int:
    """Project the source into staging, one output part per source part: the parts the fit kept
    from memory, the others read again; both in the same blocks (see BLOCK)."""
    finite = _Finite(source.name)
    writer = tables.PartWriter(staging, _id_column(source))
    done = {path for path, *_ in kept.parts} if kept is not None else set()
    reference = xp.asarray(projection.reference)
    scratch = _Scratch(xp, projection.input_dim)

    def kept_blocks() -> Iterator[tuple[pa.Array, Any, Path, bool]]:
        for path, start, count, ids in kept.parts if kept is not None else []:
            for at in range(0, count, BLOCK):
                rows = kept.rows[start + at : start + min(at + BLOCK, count)]
                yield ids.slice(at, len(rows)), rows, path, True

    def read_blocks() -> Iterator[tuple[pa.Array, Any, Path, bool]]:
        remaining = [p for p in tables.part_files(store.path(source.kind, source.name)) if p not in done]
        batches = tables.iter_embeddings(remaining, _id_column(source), workers=_readers(xp) if xp is np else None)
        for ids, x, path in _blocks(batches):
            if x.shape[1] != projection.input_dim:
                raise DataError(f"embeddings {source.name!r} have {x.shape[1]} dims; the projection expects {projection.input_dim}")
            yield ids, x, path, False

    def project(block: tuple[pa.Array, Any, Path, bool]) -> tuple[pa.Array, np.ndarray, Path, Any]:
        ids, x, path, shifted = block
        rows = x
        if not shifted:
            rows = scratch.get(len(x))
            shift_into(x, reference, rows, xp)
        out = projection.transform(rows, xp, shifted=True)
        return ids, to_numpy(out), path, None if shifted or bool(xp.isfinite(out).all()) else x

    def projected(blocks: Iterator, workers: int) -> Iterator:
        if xp is not np:
            yield from map(project, blocks)
            return
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield from (map(project, blocks) if workers == 1 else tables.ordered_map(project, blocks, workers=workers, ahead=workers))

    try:
        with reporter.progress("projecting", total=source.rows(prefix=tables.PART_PREFIX), unit="rows") as advance:
            # Kept blocks on every core; read ones on the cores the readers leave (one on 2 cores,
            # where one thread computing in order kept up with one reader: more was slower).
            computers = _computers()
            for blocks, workers in ((kept_blocks(), computers), (read_blocks(), max(1, min(computers, (os.cpu_count() or 1) - _readers(xp))))):
                for ids, out, path, suspect in projected(blocks, workers):
                    if suspect is not None:
                        finite.check(ids, suspect)
                    writer.write(path, ids, out)
                    advance(len(ids))
    finally:
        writer.close()
    finite.raise_if_bad()
    if writer.rows == 0:
        raise DataError(f"embeddings {source.name!r} have no rows")
    return writer.rows


def _curve(ratio: np.ndarray) -> dict[str, float]:
    """Cumulative explained variance at 1, 2, 4, ... components and at the chosen count."""
    cumulative = np.cumsum(ratio)
    points = sorted({min(2**i, len(ratio)) for i in range(int(np.log2(max(len(ratio), 1))) + 1)} | {len(ratio)})
    return {str(k): round(float(cumulative[k - 1]), 4) for k in points}


def _embeddings_meta(source: ArtifactRecord, projection_name: str, projection: Projection) -> dict[str, Any]:
    return {"id_column": _id_column(source), "id_type": source.metadata.get("id_type"), "dim": projection.dims,
            "projection": projection_name, "normalize": projection.normalize,
            "explained_variance_ratio_total": round(float(projection.explained_variance_ratio.sum()), 6),
            "source": source.name}


def _write_sidecars(staging: Path, meta: dict[str, Any]) -> None:
    (staging / EMBEDDINGS_INFO).write_text(json.dumps(meta, indent=2))
    tables.write_summary(staging, tables.part_files(staging), PARQUET_SUMMARY)


# ----------------------------------------------------------------------------- entry points
def run(store: ArtifactStore, options: ReduceOptions, reporter: Reporter = SILENT) -> ReduceResult:
    source = store.require("embeddings", options.source)
    in_dim = int(source.metadata.get("dim", 0))
    fit_record, sample_size = source, None
    if options.fit_on:
        if options.fit_on.isdigit():  # (at least 2: checked with the options)
            sample_size = int(options.fit_on)
        else:
            fit_record = store.require("embeddings", options.fit_on)
            if int(fit_record.metadata.get("dim", 0)) != in_dim:
                raise DataError(f"--fit-on {options.fit_on!r} has {fit_record.metadata.get('dim')} dims, {options.source!r} has {in_dim}")
    total = fit_record.rows(prefix=tables.PART_PREFIX)
    fit_rows = min(total, sample_size) if sample_size else total
    if fit_rows == 0:
        raise DataError(f"embeddings {fit_record.name!r} have no rows")
    if (options.dims is None) == (options.variance is None):
        raise UsageError("give either --dims or --variance")
    if options.dims is not None:
        if options.dims < 1 or options.dims >= in_dim:
            raise UsageError(f"--dims {options.dims} must be between 1 and {in_dim - 1} (the input has {in_dim} dims)")
        if options.dims >= fit_rows:
            raise UsageError(f"--dims {options.dims} needs more than {options.dims} rows to fit on; there are {fit_rows}")
    backend = choose_backend(options.backend, fit_rows * in_dim * 4)
    memory = parse_memory(options.memory)
    name = options.output_name
    params = {"source": options.source, "dims": options.dims, "variance": options.variance, "whiten": options.whiten,
              "normalize": options.normalize, "fit_on": options.fit_on, "seed": options.seed, "method": "pca-exact"}
    fit_inputs = [source] if fit_record is source else [source, fit_record]
    proj_plan = store.plan("projections", name, "reduce fit", params, input_artifacts=fit_inputs, force=options.force,
                           packages=_PACKAGES, warn=reporter.warn)
    emb_plan = store.plan("embeddings", name, "reduce transform", params, input_artifacts=fit_inputs, force=options.force,
                          packages=_PACKAGES, warn=reporter.warn)
    if proj_plan.up_to_date and emb_plan.up_to_date:
        return ReduceResult(proj_plan.existing, emb_plan.existing, True)

    with store.building(emb_plan) as made:  # one build of this name at a time (see ArtifactStore.building)
        if made is not None:
            return ReduceResult(store.require("projections", name), made, True)
        for record in {source.name: source, fit_record.name: fit_record}.values():
            store.verify(record)  # a damaged input is refused, never fitted on
        device = "cuda" if backend == "cuml" or (backend == "streaming" and gpu_arrays_available()) else "cpu"
        xp = array_module(device == "cuda")
        reuse = fit_record is source and not sample_size  # only then can kept rows spare the transform a read
        keep_rows = _keep_rows(memory, in_dim, device, backend) if reuse else 0
        reporter.info(f"fitting PCA on {fit_rows:,} x {in_dim} ({'sample of ' + options.source if sample_size else fit_record.name}) "
                      f"with {backend} on {device}")
        started = time.time()
        spectrum, kept = _fit(store, fit_record, _sample_rows(total, sample_size, options.seed) if sample_size else None,
                              backend, in_dim, xp, keep_rows, reporter, reuse)
        dims = options.dims if options.dims is not None else spectrum.dims_for(options.variance)
        if dims >= in_dim and options.variance is not None:
            dims = in_dim  # reaching that share needs every component: keep them all
        projection = spectrum.projection(dims, options.whiten, options.normalize)
        fit_seconds = time.time() - started
        variance_kept = float(projection.explained_variance_ratio.sum())
        info = {
            "dims": dims, "input_dim": in_dim, "whiten": options.whiten, "normalize": options.normalize, "backend": backend,
            "source": {"name": source.name, "fingerprint": source.fingerprint},
            "fit_on": {"name": fit_record.name, "fingerprint": fit_record.fingerprint, "rows": spectrum.rows,
                       "sample": sample_size, "seed": options.seed if sample_size else None},
            "explained_variance_ratio_total": round(variance_kept, 6),
            "explained_variance_ratio": [round(float(v), 6) for v in projection.explained_variance_ratio],
            "explained_variance_curve": _curve(projection.explained_variance_ratio),
        }
        kept_rows = sum(count for _, _, count, _ in kept.parts) if kept is not None else 0
        info["device"] = device
        info["kept_in_memory"] = round(kept_rows / total, 4) if total else 0.0  # share of rows not read twice
        # Transform first, publish both after: a NaN in the rows to transform leaves nothing behind.
        with store.staging(proj_plan) as proj_staging, store.staging(emb_plan) as emb_staging:
            projection.save(proj_staging, info)
            rows = _transform(store, source, projection, emb_staging, xp, kept, reporter)
            del kept
            _write_sidecars(emb_staging, _embeddings_meta(source, name, projection))
            proj_record = store.prepare(proj_plan, proj_staging, metadata=info, summary={"fit_seconds": round(fit_seconds, 3)}, device=device)
            # The reduced vectors also depend on the projection: record it so `status` can tell staleness.
            emb_plan.inputs["artifacts"].append({"kind": "projections", "name": name, "fingerprint": proj_record.fingerprint})
            emb_record = store.prepare(emb_plan, emb_staging, metadata=_embeddings_meta(source, name, projection),
                                       summary={"rows": rows, "seconds": round(time.time() - started, 3)}, device=device)
            store.commit([(proj_record, proj_staging), (emb_record, emb_staging)])  # both or neither
        return ReduceResult(proj_record, emb_record, False)


def apply(store: ArtifactStore, projection_name: str, source_name: str, name: str | None = None,
          force: bool = False, reporter: Reporter = SILENT) -> tuple[ArtifactRecord, bool]:
    """Project `source_name` with the saved projection `projection_name` (new items, same space)."""
    proj_record = store.require("projections", projection_name)
    source = store.require("embeddings", source_name)
    projection = Projection.load(store.verify(proj_record))
    if int(source.metadata.get("dim", 0)) != projection.input_dim:
        raise DataError(f"embeddings {source_name!r} have {source.metadata.get('dim')} dims; projection "
                        f"{projection_name!r} was fitted on {projection.input_dim}")
    name = name or f"{source_name}-{projection_name}"
    params = {"apply": projection_name, "source": source_name}
    plan = store.plan("embeddings", name, "reduce apply", params, input_artifacts=[source, proj_record],
                      force=force, packages=("numpy",), refresh=True, warn=reporter.warn)
    if plan.up_to_date:
        return plan.existing, True
    with store.building(plan) as made:
        if made is not None:
            return made, True
        store.verify(source)  # a damaged input is refused, never projected
        started = time.time()
        use_gpu = gpu_arrays_available()
        with store.staging(plan) as staging:
            rows = _transform(store, source, projection, staging, array_module(use_gpu), None, reporter)
            meta = _embeddings_meta(source, projection_name, projection)
            _write_sidecars(staging, meta)
            record = store.publish(plan, staging, metadata={**meta, "projection_fingerprint": proj_record.fingerprint},
                                   summary={"rows": rows, "seconds": round(time.time() - started, 3)},
                                   device="cuda" if use_gpu else "cpu")
        return record, False
