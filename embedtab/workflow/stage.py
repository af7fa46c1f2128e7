"""`embedtab fit-workflow` and `embedtab transform`.

fit-workflow writes workflows/<name>/: exactly what `nvtabular.Workflow.save` writes (metadata.json,
workflow.pkl, categories/), so plain `nvtabular.Workflow.load` opens it. Because loading unpickles
(CVE-2025-33214 in nvtabular 23.8), embedtab records every file's sha256 at fit time and
`load_workflow` verifies them before it lets nvtabular unpickle anything.

transform writes datasets/<name>/: NVTabular's parquet parts plus the Merlin schema.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore
from embedtab.device import gpu_dataframes_available
from embedtab.errors import ConfigError, DataError, UsageError
from embedtab.fingerprint import files_fingerprint
from embedtab.reporting import SILENT, Reporter
from embedtab.workflow.config import WorkflowConfig, load_config

_PACKAGES = ("nvtabular", "merlin-core", "pandas", "dask", "pyarrow", "numpy")


@contextlib.contextmanager
def quiet_merlin() -> Iterator[None]:
    """Merlin warns on import about TensorFlow/Triton being absent and on CPU-only runs; not our users' concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"merlin\..*|nvtabular\..*")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*(Tensorflow|Triton|GPU|cudf|dask_cudf).*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def _dataset(paths: Sequence[Path], use_gpu: bool, part_size: str | None = None) -> Any:
    from merlin.io import Dataset

    suffixes = {p.suffix for p in paths}
    if len(suffixes) > 1:
        raise UsageError("inputs mix parquet and csv files; pass one format at a time")
    engine = "csv" if suffixes == {".csv"} else "parquet"
    kwargs: dict[str, Any] = {"engine": engine, "cpu": not use_gpu}
    if part_size:
        kwargs["part_size"] = part_size
    return Dataset([str(p) for p in paths], **kwargs)


def _input_columns(paths: Sequence[Path]) -> list[str]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    first = paths[0]
    if first.suffix == ".csv":
        with pacsv.open_csv(first) as reader:
            return list(reader.schema.names)
    return list(pq.read_schema(first).names)


def _check_columns(config: WorkflowConfig, paths: Sequence[Path], config_path: str) -> None:
    available = _input_columns(paths)
    for index, group in enumerate(config.features):
        missing = [c for c in group.columns if c not in available]
        if missing:
            raise ConfigError(
                f"{config_path}: features[{index}].columns: {', '.join(missing)} not in the data "
                f"({paths[0].name} has {', '.join(available)})"
            )


@dataclass
class FitOptions:
    config: str
    data: Sequence[str]
    name: str | None = None
    force: bool = False


@dataclass
class FitResult:
    record: ArtifactRecord
    up_to_date: bool


def fit(store: ArtifactStore, options: FitOptions, reporter: Reporter = SILENT) -> FitResult:
    config = load_config(options.config)
    name = options.name or config.name or Path(options.config).stem
    paths = tables.resolve_inputs(options.data)
    _check_columns(config, paths, options.config)
    use_gpu = gpu_dataframes_available()
    params = {"config": config.model_dump(mode="json"), "config_path": str(options.config), "data": [str(p) for p in paths]}
    plan = store.plan(
        "workflows", name, "fit-workflow", params, input_files=files_fingerprint(paths),
        force=options.force, packages=_PACKAGES,
    )
    if plan.up_to_date:
        return FitResult(plan.existing, True)

    with quiet_merlin():
        import nvtabular as nvt

        from embedtab.workflow.compile import compile_workflow

        store.staging_root().mkdir(parents=True, exist_ok=True)
        with store.staging(plan) as staging, tempfile.TemporaryDirectory(dir=store.staging_root(), prefix="fit-") as scratch:
            workflow = compile_workflow(config, scratch)
            reporter.info(f"fitting workflow {name!r} on {len(paths)} file(s) ({'GPU/cuDF' if use_gpu else 'CPU/pandas'})")
            started = time.time()
            try:
                workflow.fit(_dataset(paths, use_gpu))
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(f"fitting {options.config} on {paths[0].name}: {type(exc).__name__}: {exc}") from None
            fit_seconds = time.time() - started
            workflow.save(str(staging))
            cardinalities = {
                col: {"cardinality": int(card), "embedding_dim": int(dim)}
                for col, (card, dim) in sorted(nvt.ops.get_embedding_sizes(workflow).items())
            }
            metadata = {
                "engine": "gpu" if use_gpu else "cpu",
                "input_columns": config.input_columns(),
                "output_schema": _schema_summary(workflow.output_schema),
                "cardinalities": cardinalities,
            }
            record = store.publish(
                plan, staging, metadata=metadata, summary={"fit_seconds": round(fit_seconds, 3)},
                device="cuda" if use_gpu else "cpu",
            )
    return FitResult(record, False)


def _schema_summary(schema: Any) -> list[dict[str, Any]]:
    return [
        {"name": col.name, "dtype": str(col.dtype.to_numpy if hasattr(col.dtype, "to_numpy") else col.dtype),
         "tags": sorted(str(getattr(t, "value", t)) for t in col.tags)}
        for col in schema
    ]


def load_workflow(store: ArtifactStore, name: str, trust: bool = False) -> tuple[Any, ArtifactRecord]:
    """Verify every file against the sha256 recorded at fit time, then let NVTabular unpickle."""
    record = store.require("workflows", name)
    path = store.path("workflows", name) if trust else store.verify(record)
    with quiet_merlin():
        import nvtabular as nvt

        return nvt.Workflow.load(str(path)), record


def categorify_paths(workflow: Any) -> dict[str, str]:
    """Column -> unique-values parquet of every Categorify in a (loaded) workflow."""
    from merlin.dag import Graph
    from nvtabular.ops import Categorify

    found: dict[str, str] = {}
    for node in Graph.get_nodes_by_op_type([workflow.output_node], Categorify):
        found.update(node.op.categories)
    return found


@dataclass
class TransformOptions:
    workflow: str
    data: Sequence[str]
    name: str | None = None
    force: bool = False
    part_size: str | None = None


def transform(store: ArtifactStore, options: TransformOptions, reporter: Reporter = SILENT) -> FitResult:
    name = options.name or options.workflow
    paths = tables.resolve_inputs(options.data)
    record = store.require("workflows", options.workflow)
    missing = [c for c in record.metadata.get("input_columns", []) if c not in _input_columns(paths)]
    if missing:
        raise DataError(f"{paths[0]}: missing column(s) {', '.join(missing)} that workflow {options.workflow!r} needs")
    params = {"workflow": options.workflow, "data": [str(p) for p in paths]}
    plan = store.plan(
        "datasets", name, "transform", params, input_files=files_fingerprint(paths),
        input_artifacts=[record], force=options.force, packages=_PACKAGES, refresh=True,
    )
    if plan.up_to_date:
        return FitResult(plan.existing, True)
    workflow, _ = load_workflow(store, options.workflow)
    use_gpu = gpu_dataframes_available()
    with quiet_merlin(), store.staging(plan) as staging:
        reporter.info(f"transforming {len(paths)} file(s) with workflow {options.workflow!r}")
        started = time.time()
        dataset = workflow.transform(_dataset(paths, use_gpu, options.part_size))
        dataset.to_parquet(str(staging), out_files_per_proc=1)
        seconds = time.time() - started
        rows = sum(tables.parquet_rows(p) for p in sorted(staging.glob("*.parquet")))
        metadata = {"engine": "gpu" if use_gpu else "cpu", "workflow": options.workflow,
                    "output_schema": _schema_summary(workflow.output_schema), "rows": rows}
        out = store.publish(plan, staging, metadata=metadata, summary={"rows": rows, "seconds": round(seconds, 3)},
                            device="cuda" if use_gpu else "cpu")
    return FitResult(out, False)
