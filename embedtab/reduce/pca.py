"""Exact PCA three ways (scikit-learn, cuML, streaming) ending in one Spectrum, and the saved,
pickle-free Projection that every output goes through.

The streaming fit is written here because no library offers exact out-of-core PCA: one pass
accumulates the shifted sum and Gram matrix in float64, then an eigendecomposition of the
covariance gives the same components as a full SVD. With CuPy as the array module the same code
runs on a GPU.

Every path subtracts one reference vector (`shift`: the mean of the first batch, saved with the
projection) before any product: it keeps float32 products accurate for embeddings far from the
origin, and it lets the fit keep its shifted rows for the transform -- so a fit's output and a
later --apply of the same rows are computed identically, bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedtab.artifacts.layout import PROJECTION_ARRAYS, PROJECTION_INFO


def fix_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude loading of every component positive (PCA signs are arbitrary)."""
    rows = np.arange(components.shape[0])
    pivots = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[rows, pivots])
    signs[signs == 0] = 1
    return components * signs[:, None]


@dataclass
class Projection:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows with a fixed sign convention
    explained_variance: np.ndarray  # (k,)
    explained_variance_ratio: np.ndarray  # (k,)
    whiten: bool
    normalize: bool = False
    shift: np.ndarray | None = None  # (d,) subtracted before the product; None (older projections): the mean

    @property
    def reference(self) -> np.ndarray:
        """The float32 vector every input row has subtracted before the product."""
        return np.asarray(self.mean if self.shift is None else self.shift, dtype=np.float32)

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.components.shape[1])

    def transform(self, x: Any, xp: Any = np, shifted: bool = False) -> Any:
        """(n, d) -> (n, k) float32 with numpy or cupy arrays (the same code on CPU and GPU).

        `x` holds raw vectors, or (shifted=True) vectors with `reference` already subtracted, as the
        fit keeps them. float32 arithmetic, like scikit-learn's transform of float32 input: the
        inputs are float32 embeddings, and float64 would double the time and the memory for no
        visible gain.
        """
        components = xp.asarray(self.components, dtype=xp.float32)
        x = xp.asarray(x, dtype=xp.float32)
        out = (x if shifted else x - xp.asarray(self.reference)) @ components.T
        if self.shift is not None:  # the rest of the centring: (mean - shift) projected
            out -= xp.asarray((self.mean - self.shift).astype(np.float32)) @ components.T
        if self.whiten:
            out /= xp.sqrt(xp.asarray(self.explained_variance, dtype=xp.float32))
        if self.normalize:
            norms = xp.linalg.norm(out, axis=1, keepdims=True)
            out /= xp.where(norms > 0, norms, xp.float32(1.0))
        return out

    def save(self, directory: Path, info: dict[str, Any]) -> None:
        np.savez(
            directory / PROJECTION_ARRAYS,
            mean=self.mean,
            components=self.components,
            explained_variance=self.explained_variance,
            explained_variance_ratio=self.explained_variance_ratio,
            whiten=np.array(self.whiten),
            normalize=np.array(self.normalize),
            **({"shift": self.shift} if self.shift is not None else {}),
        )
        (directory / PROJECTION_INFO).write_text(json.dumps(info, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Projection:
        with np.load(directory / PROJECTION_ARRAYS, allow_pickle=False) as data:
            return cls(
                mean=data["mean"],
                components=data["components"],
                explained_variance=data["explained_variance"],
                explained_variance_ratio=data["explained_variance_ratio"],
                whiten=bool(data["whiten"]),
                normalize=bool(data["normalize"]) if "normalize" in data.files else False,
                shift=data["shift"] if "shift" in data.files else None,
            )


@dataclass
class Spectrum:
    """A complete fit: every component by decreasing variance, before a dimension is chosen."""

    mean: np.ndarray
    components: np.ndarray  # (r, d)
    variance: np.ndarray  # (r,)
    total_variance: float
    rows: int
    shift: np.ndarray | None = None  # the reference the fit subtracted (see Projection.shift)

    @property
    def ratio(self) -> np.ndarray:
        return self.variance / self.total_variance if self.total_variance > 0 else np.zeros_like(self.variance)

    def dims_for(self, variance: float) -> int:
        """Smallest number of components whose explained variance reaches `variance`."""
        reached = np.flatnonzero(np.cumsum(self.ratio) >= variance - 1e-12)
        return int(reached[0]) + 1 if len(reached) else len(self.variance)

    def projection(self, dims: int, whiten: bool, normalize: bool) -> Projection:
        return Projection(
            self.mean,
            fix_signs(self.components[:dims]),
            self.variance[:dims].copy(),
            self.ratio[:dims].copy(),
            whiten,
            normalize,
            self.shift,
        )


def _spectrum(mean: Any, components: Any, variance: Any, total: float, rows: int, shift: Any = None) -> Spectrum:
    order = np.argsort(-np.asarray(variance), kind="stable")
    shift = None if shift is None else np.asarray(shift, np.float64)
    mean = np.asarray(mean, np.float64) + (0 if shift is None else shift)
    return Spectrum(mean, np.asarray(components, np.float64)[order], np.asarray(variance, np.float64)[order], float(total), rows, shift)


def fit_sklearn(x: np.ndarray, shift: np.ndarray | None = None) -> Spectrum:
    """In-memory exact fit of rows that had `shift` subtracted (PCA does not depend on it)."""
    from sklearn.decomposition import PCA

    # covariance_eigh is exact and cheap when rows >> dims (the embeddings case).
    model = PCA(n_components=None, svd_solver="covariance_eigh").fit(np.asarray(x, dtype=np.float64))
    return _spectrum(model.mean_, model.components_, model.explained_variance_, float(np.sum(model.explained_variance_)), len(x), shift)


def fit_cuml(x: Any, shift: np.ndarray | None = None) -> Spectrum:
    import cuml
    import cupy

    data = cupy.asarray(x, dtype=cupy.float64)
    model = cuml.PCA(n_components=min(data.shape), svd_solver="full").fit(data)
    host = [cupy.asnumpy(cupy.asarray(a)) for a in (model.mean_, model.components_, model.explained_variance_)]
    return _spectrum(host[0], host[1], host[2], float(np.sum(host[2])), len(x), shift)


def shift_into(x: Any, shift: Any, out: Any, xp: Any = np) -> None:
    """out[:] = x - shift, with no temporary: x on the host or the device, out and shift in `xp`."""
    if xp is np:
        np.subtract(x, shift, out=out)
    else:
        out[...] = xp.asarray(x, dtype=xp.float32)
        out -= shift


class Covariance:
    """Streaming mean and covariance: rows in, then spectrum(). numpy or cupy as `xp`.

    Rows go in shifted by a reference (the first rows' mean): `shift_into`
    writes them to a buffer the caller owns -- a reused scratch batch, or the rows it keeps for
    the transform -- and `add_shifted` accumulates them (or, to compute batches on several
    threads, `moments` on each and `accumulate` in order). No batch-sized temporary is allocated.
    """

    def __init__(self, dim: int, xp: Any = np):
        self.xp, self.dim, self.rows = xp, dim, 0
        self.shift: Any = None
        self.sum = xp.zeros(dim, dtype=xp.float64)
        self.gram = xp.zeros((dim, dim), dtype=xp.float64)

    def shift_into(self, x: Any, out: Any) -> None:
        """out[:] = x - shift (x on the host or the device; out in `xp`); the first call sets the shift."""
        self.set_shift(x)
        shift_into(x, self.shift, out, self.xp)

    def set_shift(self, x: Any) -> None:
        """Set the reference subtracted from every row: the mean of the first finite rows given (later calls keep it)."""
        xp = self.xp
        if self.shift is None:
            # Shifting by a first estimate of the mean keeps the float32 Gram product accurate
            # (from the finite rows: one NaN must not turn every later row into NaN).
            first = xp.asarray(x, dtype=xp.float32)
            first = first[xp.isfinite(first).all(axis=1)]
            mean = first.mean(axis=0, dtype=xp.float64) if len(first) else xp.zeros(self.dim)
            self.shift = mean.astype(xp.float32)

    def moments(self, centred: Any, gram: bool = True) -> tuple[Any, Any]:
        """Column sums and (gram=True) the float32 Gram product of rows already shifted, leaving the
        accumulators alone: threads may compute batches at once while one of them adds the results
        in order with `accumulate` (so the sum, and the fit, do not depend on thread timing).

        Column sums go through BLAS (a ones vector times the rows), which also checks finiteness:
        NaN and inf propagate into them, so no per-value test is needed while the data is clean.
        """
        xp = self.xp
        sums = xp.ones(len(centred), dtype=xp.float32) @ centred
        return sums, (centred.T @ centred if gram else None)

    def accumulate(self, rows: int, sums: Any, gram: Any = None) -> bool:
        """Add one batch's `moments`; False (nothing added) when a sum is NaN or inf."""
        xp = self.xp
        if not bool(xp.isfinite(sums).all()):
            return False
        self.sum += sums.astype(xp.float64)
        if gram is not None:
            self.gram += gram.astype(xp.float64)
        self.rows += rows
        return True

    def add_shifted(self, centred: Any, gram: bool = True) -> bool:
        """Accumulate rows already shifted; False (nothing added) when any value is NaN or inf."""
        if not len(centred):
            return True
        return self.accumulate(len(centred), *self.moments(centred, gram))

    def add(self, chunk: Any) -> bool:
        """Add raw rows (a convenience over shift_into + add_shifted; allocates one copy)."""
        out = self.xp.empty((len(chunk), self.dim), dtype=self.xp.float32)
        self.shift_into(chunk, out)
        return self.add_shifted(out)

    def spectrum(self) -> Spectrum:
        xp = self.xp
        n = self.rows
        offset = self.sum / n
        covariance = (self.gram - n * xp.outer(offset, offset)) / (n - 1)
        values, vectors = xp.linalg.eigh(covariance)  # ascending
        values = xp.clip(values, 0, None)
        host = (lambda a: a.get()) if hasattr(values, "get") else (lambda a: a)
        shift = host(self.shift).astype(np.float64)
        return _spectrum(host(offset), host(vectors.T), host(values), float(host(xp.trace(covariance))), n, shift)
