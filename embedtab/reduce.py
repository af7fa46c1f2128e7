"""`embedtab reduce`: PCA of an embeddings artifact, with a saved, re-appliable projection.

Two artifacts come out of one run:
    projections/<name>/   projection.npz (mean, components, explained_variance[_ratio]; no pickle)
                          projection.json (dims, whiten, backend, source fingerprint, variance)
    embeddings/<name>/    part-NNNNN.parquet with the source ids and the reduced `embedding`

Fitting uses cuML on a GPU and scikit-learn otherwise; both results go through the same sign
convention and the same transform code (numpy or cupy chosen once), so CPU and GPU agree up to
rounding.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore
from embedtab.device import array_module, gpu_arrays_available, to_numpy
from embedtab.errors import DataError, UsageError
from embedtab.reporting import SILENT, Reporter

BACKENDS = ("auto", "sklearn", "cuml")
PROJECTION_FILE = "projection.npz"
PART_ROWS = 100_000


@dataclass
class Projection:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows with a fixed sign convention
    explained_variance: np.ndarray  # (k,)
    explained_variance_ratio: np.ndarray  # (k,)
    whiten: bool

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.components.shape[1])

    def transform(self, x: Any, xp: Any = np) -> Any:
        """(n, d) -> (n, k) float32 with numpy or cupy arrays (the same code on CPU and GPU)."""
        mean = xp.asarray(self.mean, dtype=xp.float64)
        components = xp.asarray(self.components, dtype=xp.float64)
        out = (xp.asarray(x, dtype=xp.float64) - mean) @ components.T
        if self.whiten:
            out /= xp.sqrt(xp.asarray(self.explained_variance, dtype=xp.float64))
        return out.astype(xp.float32)

    def save(self, directory: Path, info: dict[str, Any]) -> None:
        np.savez(
            directory / PROJECTION_FILE,
            mean=self.mean,
            components=self.components,
            explained_variance=self.explained_variance,
            explained_variance_ratio=self.explained_variance_ratio,
            whiten=np.array(self.whiten),
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
            )


def fix_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude loading of every component positive (PCA signs are arbitrary)."""
    rows = np.arange(components.shape[0])
    pivots = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[rows, pivots])
    signs[signs == 0] = 1
    return components * signs[:, None]


def choose_backend(requested: str) -> str:
    if requested not in BACKENDS:
        raise UsageError(f"invalid --backend {requested!r}: use {', '.join(BACKENDS)}")
    if requested == "auto":
        return "cuml" if gpu_arrays_available() and _cuml_importable() else "sklearn"
    if requested == "cuml" and not (gpu_arrays_available() and _cuml_importable()):
        raise UsageError("--backend cuml needs cuML and a CUDA device; use --backend sklearn")
    return requested


def _cuml_importable() -> bool:
    try:
        import cuml  # noqa: F401

        return True
    except Exception:
        return False


def fit_pca(x: np.ndarray, dims: int, whiten: bool, backend: str) -> Projection:
    """Exact (full SVD) PCA in float64 on the chosen backend."""
    if backend == "cuml":
        import cuml
        import cupy

        model = cuml.PCA(n_components=dims, svd_solver="full", whiten=whiten)
        model.fit(cupy.asarray(x, dtype=cupy.float64))
        fitted = [to_numpy(cupy.asarray(a)) for a in (model.mean_, model.components_, model.explained_variance_, model.explained_variance_ratio_)]
    else:
        from sklearn.decomposition import PCA

        model = PCA(n_components=dims, svd_solver="full", whiten=whiten)
        model.fit(np.asarray(x, dtype=np.float64))
        fitted = [model.mean_, model.components_, model.explained_variance_, model.explained_variance_ratio_]
    mean, components, variance, ratio = (np.asarray(a, dtype=np.float64) for a in fitted)
    return Projection(mean, fix_signs(components), variance, ratio, whiten)


@dataclass
class ReduceOptions:
    source: str
    dims: int
    name: str | None = None
    backend: str = "auto"
    whiten: bool = False
    force: bool = False

    @property
    def output_name(self) -> str:
        return self.name or f"{self.source}-pca{self.dims}"


@dataclass
class ReduceResult:
    projection: ArtifactRecord
    embeddings: ArtifactRecord
    up_to_date: bool


def read_embeddings(store: ArtifactStore, record: ArtifactRecord) -> tuple[Any, np.ndarray, str]:
    """(ids as a pyarrow array, (n, dim) float32 vectors, id column name) of an embeddings artifact."""
    directory = store.path(record.kind, record.name)
    files = tables.part_files(directory)
    id_name = record.metadata.get("id_column")
    if not files:
        raise DataError(f"embeddings {record.name!r} has no rows")
    table = tables.read_parts(files, [id_name, tables.EMBEDDING])
    return table.column(id_name).combine_chunks(), tables.vectors(table), id_name


def run(store: ArtifactStore, options: ReduceOptions, reporter: Reporter = SILENT) -> ReduceResult:
    source = store.require("embeddings", options.source)
    in_dim = int(source.metadata.get("dim", 0))
    rows = source.rows(prefix="part-")
    if options.dims < 1 or options.dims >= in_dim:
        raise UsageError(f"--dims {options.dims} must be between 1 and {in_dim - 1} (the input has {in_dim} dims)")
    if options.dims >= rows:
        raise UsageError(f"--dims {options.dims} needs more than {options.dims} rows; {options.source!r} has {rows}")
    backend = choose_backend(options.backend)
    name = options.output_name
    params = {"source": options.source, "dims": options.dims, "whiten": options.whiten, "method": "pca-full-svd"}
    packages = ("numpy", "scikit-learn", "cuml")
    proj_plan = store.plan("projections", name, "reduce fit", params, input_artifacts=[source], force=options.force, packages=packages)
    emb_plan = store.plan("embeddings", name, "reduce transform", params, input_artifacts=[source], force=options.force, packages=packages)
    if proj_plan.up_to_date and emb_plan.up_to_date:
        return ReduceResult(proj_plan.existing, emb_plan.existing, True)

    ids, x, id_name = read_embeddings(store, source)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        first = ids.filter(pa.array(bad)).to_pylist()[:5]
        raise DataError(f"embeddings {options.source!r}: {int(bad.sum())} rows hold NaN or inf (ids {first})")
    reporter.info(f"fitting PCA {in_dim} -> {options.dims} on {len(x):,} rows with {backend}")
    started = time.time()
    projection = fit_pca(x, options.dims, options.whiten, backend)
    fit_seconds = time.time() - started
    kept = float(projection.explained_variance_ratio.sum())
    info = {
        "dims": options.dims,
        "input_dim": in_dim,
        "whiten": options.whiten,
        "backend": backend,
        "source": {"name": source.name, "fingerprint": source.fingerprint},
        "rows": int(len(x)),
        "explained_variance_ratio_total": round(kept, 6),
        "explained_variance_ratio": [round(float(v), 6) for v in projection.explained_variance_ratio],
    }
    device = "cuda" if backend == "cuml" else "cpu"
    with store.staging(proj_plan) as staging:
        projection.save(staging, info)
        proj_record = store.publish(proj_plan, staging, metadata=info, summary={"seconds": round(fit_seconds, 3)}, device=device)

    xp = array_module(backend == "cuml")
    # The reduced vectors also depend on the projection: record it so `status` can tell staleness.
    emb_plan.inputs["artifacts"].append({"kind": "projections", "name": name, "fingerprint": proj_record.fingerprint})
    with store.staging(emb_plan) as staging:
        reduced = to_numpy(projection.transform(x, xp))
        for index, start in enumerate(range(0, len(reduced), PART_ROWS)):
            part = tables.embeddings_table(id_name, ids.slice(start, PART_ROWS), reduced[start : start + PART_ROWS])
            tables.write_parquet(part, staging / tables.part_name(index))
        meta = {"id_column": id_name, "id_type": str(ids.type), "dim": options.dims, "projection": name,
                "explained_variance_ratio_total": round(kept, 6), "source": source.name}
        (staging / "embeddings.json").write_text(json.dumps(meta, indent=2))
        emb_record = store.publish(
            emb_plan, staging, metadata=meta,
            summary={"rows": int(len(x)), "seconds": round(time.time() - started, 3)}, device=device,
        )
    return ReduceResult(proj_record, emb_record, False)
