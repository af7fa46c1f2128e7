"""reduce's fit: one streaming read of the fit input, which keeps as many rows as it may for the
transform (so they are not read twice) and hands the rest to the backend batch by batch.

Every batch is shifted into a buffer: the rows kept for the transform while they fit in the
budget (or all of them, for the in-memory backends), a scratch batch otherwise; the streaming
backend computes the batch's Gram product from it. Batches are shifted and multiplied on several
threads and added up in order (see rows.in_order), so the sums are the same bits on any number
of cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore
from embedtab.device import to_numpy
from embedtab.reduce.pca import Covariance, Spectrum, fit_cuml, fit_sklearn, shift_into
from embedtab.reduce.rows import Finite, Scratch, id_column, in_order, readers
from embedtab.reporting import Reporter


@dataclass
class Kept:
    """Rows of the fit pass kept for the transform: whole source parts, the first ones, in order,
    with the fit's shift subtracted (numpy on CPU, cupy on GPU)."""

    rows: Any
    parts: list[tuple[Path, int, int, pa.Array]]  # (source part, first row in `rows`, row count, ids)


@dataclass
class FitSetup:
    """What the fit pass reads and how."""

    record: ArtifactRecord  # the embeddings fitted on
    sample: np.ndarray | None  # sorted row numbers of a sample, or None: every row
    backend: str  # sklearn, cuml or streaming (never auto here)
    dim: int
    xp: Any  # numpy or cupy: where the streaming backend computes
    keep_rows: int  # how many rows may stay in memory for the transform
    reuse: bool  # the fit input is the source, whole: only then do kept rows spare the transform a read


def sample_rows(total: int, size: int, seed: int) -> np.ndarray | None:
    """Sorted row numbers of a seeded sample of `size` rows (None: the sample would be every row)."""
    if size >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))


def host_rows(rows: int, dim: int) -> np.ndarray:
    """An uninitialised (rows, dim) float32 array in ordinary 4 KB pages. numpy asks for huge pages
    for large arrays; on kernels that grant them only on request (THP "madvise", the common default)
    each 2 MB fault may stall on memory compaction, and beside the threads reading and multiplying
    that cost the fit a lot (measured keeping 600 MB: fit pass 4.1 s with huge pages, 3.6 s without)."""
    import mmap

    if rows * dim == 0:
        return np.empty((rows, dim), np.float32)
    anonymous = mmap.mmap(-1, rows * dim * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(anonymous, dtype=np.float32).reshape(rows, dim)  # the array keeps the mapping alive


def fit_pass(store: ArtifactStore, setup: FitSetup, reporter: Reporter) -> tuple[Spectrum, Kept | None]:
    """One read of the fit input: its spectrum, and the rows kept for the transform (None when they
    cannot spare it a read: a sample, another artifact, or nothing kept)."""
    return _FitPass(store, setup).run(reporter)


class _FitPass:
    """The state of one read of the fit input: the buffer of kept rows, where the next batch goes in
    it, the source part being read and its ids so far, and the running sums."""

    def __init__(self, store: ArtifactStore, setup: FitSetup):
        self.store, self.setup = store, setup
        self.finite = Finite(setup.record.name)
        self.gather = setup.backend in ("sklearn", "cuml")
        total = len(setup.sample) if setup.sample is not None else setup.record.rows(prefix=tables.PART_PREFIX)
        self.capacity = total if self.gather else min(total, setup.keep_rows)
        self.slab_xp = np if setup.backend == "cuml" else setup.xp  # cuML takes host rows
        self.kept = self._kept_buffer(setup.dim) if self.capacity else None
        self.covariance = Covariance(setup.dim, self.slab_xp)
        self.scratch = Scratch(self.slab_xp, setup.dim)  # for the rows not kept
        self.position, self.part_start, self.keeping = 0, 0, self.capacity > 0
        self.current: Path | None = None
        self.parts: list[tuple[Path, int, int, pa.Array]] = []
        self.part_ids: list[pa.Array] = []

    def _kept_buffer(self, dim: int) -> Any:
        """The buffer of the kept rows: host memory in small pages, or device memory."""
        xp = self.setup.xp
        return host_rows(self.capacity, dim) if self.slab_xp is np else xp.empty((self.capacity, dim), dtype=xp.float32)

    def run(self, reporter: Reporter) -> tuple[Spectrum, Kept | None]:
        """Add up every batch's moments in order; then the spectrum, from the sums (streaming) or
        from the gathered rows (sklearn, cuML). NaN or inf anywhere refuses the fit, naming rows."""
        total = self.setup.record.rows(prefix=tables.PART_PREFIX)
        with reporter.progress("fitting PCA", total=total, unit="rows") as advance:
            for ids, n, size, moments, bad in in_order(self._compute, self._batches(), self.slab_xp):
                if bad is not None:
                    self.finite.add(ids, bad)  # the fit will be refused: find the rows
                elif moments is not None and not self.finite.bad:
                    self.covariance.accumulate(n, *moments)
                advance(size)
        self.finite.raise_if_bad()
        shift = to_numpy(self.covariance.shift).astype(np.float64)
        if self.gather:
            rows = self._kept_rows(0, self.position)
            spectrum = fit_cuml(rows, shift) if self.setup.backend == "cuml" else fit_sklearn(rows, shift)
        else:
            spectrum = self.covariance.spectrum()
        if not self.setup.reuse or not self.parts:
            return spectrum, None  # kept rows are a sample or another artifact (or none): the transform reads the source
        return spectrum, Kept(self._kept_rows(0, self.position), self.parts)

    def _kept_rows(self, start: int, stop: int) -> Any:
        """Rows [start, stop) of the kept buffer (there is one whenever rows are kept: capacity > 0)."""
        if self.kept is None:  # (what None[start:stop] raised)
            raise TypeError("'NoneType' object is not subscriptable")
        return self.kept[start:stop]

    def _close_part(self) -> None:
        """The part read so far is kept whole, or not at all (its ids go with it)."""
        if self.keeping and self.current is not None and self.position > self.part_start:
            self.parts.append((self.current, self.part_start, self.position - self.part_start, pa.concat_arrays(self.part_ids)))
        self.part_start = self.position

    def _batches(self) -> Iterator[tuple[pa.Array, Any, Any, int]]:
        """(ids, rows, where the kept rows go or None, rows read) in order; runs on this thread."""
        record, sample = self.setup.record, self.setup.sample
        offset = 0
        for ids, x, path in tables.iter_embeddings(
            self.store.path(record.kind, record.name), id_column(record), workers=readers(self.setup.xp)
        ):
            size = len(x)
            if path != self.current:
                self._close_part()
                self.current, self.part_ids = path, []
            if sample is not None:
                local = sample[(sample >= offset) & (sample < offset + size)] - offset
                if ids is None:  # (the record names its id column; what None.take raised)
                    raise AttributeError("'NoneType' object has no attribute 'take'")
                ids, x = ids.take(pa.array(local)), x[local]
            offset += size
            n = len(x)
            if self.keeping and self.position + n > self.capacity:  # the budget ends inside this part: keep none of it
                self.keeping, self.position = False, self.part_start
            target = None
            if self.keeping:
                target = self._kept_rows(self.position, self.position + n)
                self.position += n
                self.part_ids.append(ids)
            if n:
                self.covariance.set_shift(x)  # from the first rows, before any thread uses it
            yield ids, x, target, size
        self._close_part()

    def _compute(self, batch: tuple[pa.Array, Any, Any, int]) -> tuple[pa.Array, int, int, Any, Any]:
        """(ids, rows, rows read, moments, mask of rows holding NaN/inf or None); drops the batch's
        Arrow memory as soon as it is done. Runs on the computing threads."""
        ids, x, target, size = batch
        if not len(x):
            return ids, 0, size, None, None
        if target is None:
            target = self.scratch.get(len(x))
        shift_into(x, self.covariance.shift, target, self.slab_xp)
        moments = self.covariance.moments(target, gram=not self.gather)
        finite_sums = bool(self.slab_xp.isfinite(moments[0]).all())  # NaN and inf reach the sums
        return ids, len(x), size, moments, None if finite_sums else ~np.isfinite(to_numpy(x)).all(axis=1)
