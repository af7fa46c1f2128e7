"""transform's work: the workflow to apply and the data, checked before the plan; then, in a
staging folder, the data masked (with `mask`), transformed, written as NVTabular's parquet parts
plus the Merlin schema, and counted (rows, out-of-vocabulary and null ids, masked ids)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore, Made
from embedtab.device import gpu_dataframes_available
from embedtab.errors import DataError, UsageError
from embedtab.fingerprint import columns_fingerprint, file_fingerprint, files_fingerprint, hash_value
from embedtab.reporting import Reporter
from embedtab.workflow.cluster import dask_cluster
from embedtab.workflow.describe import derived_aggregates, oov_counts, schema_summary
from embedtab.workflow.inputs import count_rows, dataset, input_schema
from embedtab.workflow.mask_dataset import mask_columns, mask_ids, mask_targets
from embedtab.workflow.merlin import external_folder, load_workflow, null_hint, quiet_merlin


@dataclass
class TransformInputs:
    """What a transform reads, gathered and checked before its plan."""

    name: str  # of the dataset artifact
    workflow: str  # an artifact name, or a folder embedtab did not write
    trust: bool  # load that workflow without checking its files against a record
    paths: list[Path]  # the data files
    record: ArtifactRecord | None  # the workflow's (None for a folder)
    fingerprint: str  # of the workflow
    needed: list[str]  # the input columns the workflow reads ([] when unknown: a folder)
    masking: dict[str, Any] | None  # the workflow's masking spec
    mask: bool  # apply it
    dtypes: dict[str, Any]  # column -> dtype of the data
    params: dict[str, Any]  # the recipe the plan records

    @property
    def config(self) -> dict[str, Any] | None:
        """The workflow's config as recorded when it was fitted (None for a folder)."""
        return self.record.params.get("config") if self.record else None

    def plan_files(self) -> dict[str, Any]:
        """The files part of the plan (`ArtifactStore.plan`'s arguments). As for fit: the columns
        the workflow (and the masking) read decide the output, not the others."""
        masked = [c for g in (self.masking or {}).get("groups", []) if self.mask for c in [*(g.get("columns") or {}), g.get("by")] if c]
        data_files = files_fingerprint(self.paths)
        used = columns_fingerprint(self.paths, [c for c in [*self.needed, *masked] if c in self.dtypes]) if self.needed else None
        return {
            "input_files": [] if used else data_files,
            "read_files": data_files if used else [],
            "content": [self.fingerprint, used] if used else self.fingerprint,
            "was": (data_files, self.fingerprint),
        }


def workflow_identity(
    store: ArtifactStore, workflow: str, trust: bool
) -> tuple[ArtifactRecord | None, str, list[str], dict[str, Any] | None]:
    """(record, fingerprint, input columns, masking spec) of the workflow to apply."""
    external = external_folder(workflow)
    if external is not None:
        if not trust:
            load_workflow(store, workflow)  # raises the explanation
        files = sorted(p for p in external.rglob("*") if p.is_file())
        return None, hash_value([file_fingerprint(p)["sha256"] for p in files]), [], None
    record = store.require("workflows", workflow)
    return record, record.fingerprint, record.metadata.get("input_columns", []), record.metadata.get("masking")


def transform_inputs(
    store: ArtifactStore, workflow: str, data: Sequence[str], name: str | None, *, mask: bool, trust: bool
) -> TransformInputs:
    """Find the workflow and the data and check that they fit: the columns the workflow reads are
    there, there are rows, and `mask` has a masking block to apply."""
    name = name or Path(workflow).name
    paths = tables.resolve_inputs(data)
    record, workflow_fp, needed, masking = workflow_identity(store, workflow, trust)
    dtypes = input_schema(paths)
    missing = [c for c in needed if c not in dtypes]
    if missing:
        raise DataError(f"{paths[0]}: missing column(s) {', '.join(missing)} that workflow {workflow!r} needs")
    if count_rows(paths) == 0:
        raise DataError(f"{', '.join(p.name for p in paths)}: no rows to transform")
    if mask and not masking:
        raise UsageError(f"--mask: workflow {workflow!r} has no masking block in its config")
    params = {"workflow": workflow, "data": [str(p) for p in paths], "mask": masking if mask else None}
    return TransformInputs(name, workflow, trust, paths, record, workflow_fp, needed, masking, mask, dtypes, params)


@dataclass
class Masked:
    """What the masking did (nothing without `mask`)."""

    rows: list[int] | None = None  # rows masked, per masking group
    ids: dict[str, int] = field(default_factory=dict)  # per categorified column, ids set to out-of-vocabulary
    targets: dict[str, list[tuple[int, bool]]] | None = None  # see mask_dataset.mask_targets


def transform_into(
    store: ArtifactStore, staging: Path, inputs: TransformInputs, reporter: Reporter, *, dask_scheduler: str | None, part_size: int | None
) -> Made:
    """Load the workflow (its files verified first, unless trusted), transform into the staging
    folder (the driver publishes it) and count what came out."""
    workflow, _ = load_workflow(store, inputs.workflow, trust=inputs.trust)
    use_gpu = gpu_dataframes_available()
    with quiet_merlin(), dask_cluster(dask_scheduler, reporter) as cluster:
        reporter.info(f"transforming {len(inputs.paths)} file(s) with workflow {inputs.workflow!r} ({cluster} Dask)")
        started = time.time()
        masked = _write_transformed(store, staging, inputs, workflow, use_gpu, part_size)
        seconds = time.time() - started
        rows = sum(tables.parquet_rows(p) for p in sorted(staging.glob("*.parquet")))
        oov = oov_counts(staging, workflow.output_schema, derived_aggregates(inputs.config))
        metadata = {
            "engine": "gpu" if use_gpu else "cpu",
            "dask": cluster,
            "workflow": inputs.workflow,
            "output_schema": schema_summary(workflow.output_schema),
            "rows": rows,
            "masking": {"spec": inputs.masking, "masked_rows": masked.rows} if inputs.mask else None,
        }
        return Made(metadata, _summary(rows, seconds, oov, masked), "cuda" if use_gpu else "cpu")


def _write_transformed(
    store: ArtifactStore, staging: Path, inputs: TransformInputs, workflow: Any, use_gpu: bool, part_size: int | None
) -> Masked:
    """The data through the workflow into staging: `columns` masking before it and `ids` masking
    after it (with `mask`), paths in the output naming where they will be once published.
    NVTabular's errors on data it cannot transform become DataErrors naming the file."""
    data = dataset(inputs.paths, use_gpu, part_size)
    raw, masked = data, Masked()
    workflow_dir = external_folder(inputs.workflow) or store.path("workflows", inputs.workflow)
    masking = inputs.masking
    if inputs.mask:
        if masking is None:  # (refused when the inputs were prepared)
            raise UsageError(f"--mask: workflow {inputs.workflow!r} has no masking block in its config")
        masked.targets = mask_targets(masking, workflow.output_schema, workflow_dir, inputs.config)
        data, masked.rows, masked.ids = mask_columns(data, masking, use_gpu, masked.targets or {})
    try:
        output = workflow.transform(data)
        from embedtab.workflow.masking import has_id_groups  # (pandas: imported only to transform)

        if inputs.mask and masking is not None and has_id_groups(masking):
            output = mask_ids(output, raw, masking, use_gpu)
        output.schema = _final_cat_paths(output.schema, workflow_dir)
        output.to_parquet(str(staging), out_files_per_proc=1)
        _final_file_list(staging, store.path("datasets", inputs.name))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise DataError(
            f"transforming {inputs.paths[0].name} with {inputs.workflow!r}: {type(exc).__name__}: {exc}{null_hint(exc)}"
        ) from None
    return masked


def _summary(rows: int, seconds: float, oov: dict[str, dict[str, int]], masked: Masked) -> dict[str, Any]:
    """The run's summary. oov: values unseen at fit time; masked: ids the masking set to the OOV
    id, counted apart (after a groupby rows are aggregated: oov then holds both)."""
    summary: dict[str, Any] = {
        "rows": rows,
        "seconds": round(seconds, 3),
        "oov": {k: max(0, v["oov"] - masked.ids.get(k, 0)) for k, v in oov.items()},
        "null": {k: v["null"] for k, v in oov.items()},
    }
    if masked.rows is not None:
        summary["masked_rows"] = masked.rows
        if masked.targets is not None:
            summary["masked"] = {k: masked.ids.get(k, 0) for k in oov}
    return summary


def _final_cat_paths(schema: Any, workflow_dir: Path) -> Any:
    """Categorify's `cat_path` in the output schema names the folder the workflow was fitted in (a
    scratch folder, gone since); name the saved workflow's own category file instead."""
    from merlin.schema import Schema

    columns = []
    for column in schema:
        properties = dict(column.properties or {})
        if "cat_path" in properties:
            properties["cat_path"] = str(workflow_dir / "categories" / Path(properties["cat_path"]).name)
            column = column.with_properties(properties)
        columns.append(column)
    return Schema(columns)


def _final_file_list(staging: Path, final: Path) -> None:
    """NVTabular's _file_list.txt names the parts where they were written (the staging folder)."""
    listing = staging / "_file_list.txt"
    if listing.is_file():
        listing.write_text(listing.read_text().replace(str(staging), str(final)))
