"""Exact PCA three ways (scikit-learn, cuML, streaming) ending in one Spectrum, and the saved,
pickle-free Projection that every output goes through.

The streaming fit is written here because no library offers exact out-of-core PCA: one pass
accumulates the shifted sum and Gram matrix in float64, then an eigendecomposition of the
covariance gives the same components as a full SVD. With CuPy as the array module the same code
runs on a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROJECTION_FILE = "projection.npz"


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

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.components.shape[1])

    def transform(self, x: Any, xp: Any = np) -> Any:
        """(n, d) -> (n, k) float32 with numpy or cupy arrays (the same code on CPU and GPU).

        float32 arithmetic, like scikit-learn's transform of float32 input: the inputs are float32
        embeddings, and float64 would double the time and the memory for no visible gain.
        """
        mean = xp.asarray(self.mean, dtype=xp.float32)
        components = xp.asarray(self.components, dtype=xp.float32)
        out = (xp.asarray(x, dtype=xp.float32) - mean) @ components.T
        if self.whiten:
            out /= xp.sqrt(xp.asarray(self.explained_variance, dtype=xp.float32))
        if self.normalize:
            norms = xp.linalg.norm(out, axis=1, keepdims=True)
            out /= xp.where(norms > 0, norms, xp.float32(1.0))
        return out

    def save(self, directory: Path, info: dict[str, Any]) -> None:
        np.savez(
            directory / PROJECTION_FILE,
            mean=self.mean,
            components=self.components,
            explained_variance=self.explained_variance,
            explained_variance_ratio=self.explained_variance_ratio,
            whiten=np.array(self.whiten),
            normalize=np.array(self.normalize),
        )
        (directory / "projection.json").write_text(json.dumps(info, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "Projection":
        with np.load(directory / PROJECTION_FILE, allow_pickle=False) as data:
            return cls(
                mean=data["mean"],
                components=data["components"],
                explained_variance=data["explained_variance"],
                explained_variance_ratio=data["explained_variance_ratio"],
                whiten=bool(data["whiten"]),
                normalize=bool(data["normalize"]) if "normalize" in data.files else False,
            )


@dataclass
class Spectrum:
    """A complete fit: every component by decreasing variance, before a dimension is chosen."""

    mean: np.ndarray
    components: np.ndarray  # (r, d)
    variance: np.ndarray  # (r,)
    total_variance: float
    rows: int

    @property
    def ratio(self) -> np.ndarray:
        return self.variance / self.total_variance if self.total_variance > 0 else np.zeros_like(self.variance)

    def dims_for(self, variance: float) -> int:
        """Smallest number of components whose explained variance reaches `variance`."""
        reached = np.flatnonzero(np.cumsum(self.ratio) >= variance - 1e-12)
        return int(reached[0]) + 1 if len(reached) else len(self.variance)

    def projection(self, dims: int, whiten: bool, normalize: bool) -> Projection:
        return Projection(self.mean, fix_signs(self.components[:dims]), self.variance[:dims].copy(),
                          self.ratio[:dims].copy(), whiten, normalize)


def _spectrum(mean: Any, components: Any, variance: Any, total: float, rows: int) -> Spectrum:
    order = np.argsort(-np.asarray(variance), kind="stable")
    return Spectrum(np.asarray(mean, np.float64), np.asarray(components, np.float64)[order],
                    np.asarray(variance, np.float64)[order], float(total), rows)


def fit_sklearn(x: np.ndarray) -> Spectrum:
    from sklearn.decomposition import PCA

    # covariance_eigh is exact and cheap when rows >> dims (the embeddings case).
    model = PCA(n_components=None, svd_solver="covariance_eigh").fit(np.asarray(x, dtype=np.float64))
    return _spectrum(model.mean_, model.components_, model.explained_variance_,
                     float(np.sum(model.explained_variance_)), len(x))


def fit_cuml(x: np.ndarray) -> Spectrum:
    import cuml
    import cupy

    data = cupy.asarray(x, dtype=cupy.float64)
    model = cuml.PCA(n_components=min(data.shape), svd_solver="full").fit(data)
    host = [cupy.asnumpy(cupy.asarray(a)) for a in (model.mean_, model.components_, model.explained_variance_)]
    return _spectrum(host[0], host[1], host[2], float(np.sum(host[2])), len(x))


class Covariance:
    """Streaming mean and covariance: add() chunks, then spectrum(). numpy or cupy as `xp`."""

    def __init__(self, dim: int, xp: Any = np):
        self.xp, self.dim, self.rows = xp, dim, 0
        self.shift: Any = None
        self.sum = xp.zeros(dim, dtype=xp.float64)
        self.gram = xp.zeros((dim, dim), dtype=xp.float64)

    def add(self, chunk: Any) -> None:
        xp = self.xp
        x = xp.asarray(chunk, dtype=xp.float32)
        if not len(x):
            return
        if self.shift is None:
            # Shifting by a first estimate of the mean keeps the float32 Gram product accurate.
            self.shift = x.mean(axis=0, dtype=xp.float64).astype(xp.float32)
        centred = x - self.shift
        self.sum += centred.sum(axis=0, dtype=xp.float64)
        self.gram += (centred.T @ centred).astype(xp.float64)
        self.rows += len(x)

    def spectrum(self) -> Spectrum:
        xp = self.xp
        n = self.rows
        offset = self.sum / n
        covariance = (self.gram - n * xp.outer(offset, offset)) / (n - 1)
        values, vectors = xp.linalg.eigh(covariance)  # ascending
        values = xp.clip(values, 0, None)
        host = (lambda a: a.get()) if hasattr(values, "get") else (lambda a: a)
        return _spectrum(host(self.shift.astype(xp.float64) + offset), host(vectors.T), host(values),
                         float(host(xp.trace(covariance))), n)
