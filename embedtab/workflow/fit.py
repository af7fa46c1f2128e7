"""fit-workflow's work: the inputs gathered and checked before the plan, then, in a staging
folder, the config compiled into an NVTabular graph, fitted, saved and described.

The saved folder is exactly what `nvtabular.Workflow.save` writes (metadata.json, workflow.pkl,
categories/), so plain `nvtabular.Workflow.load` opens it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedtab import tables
from embedtab.artifacts import ArtifactStore, Made, owner_tag
from embedtab.device import gpu_dataframes_available
from embedtab.errors import ConfigError, DataError
from embedtab.fingerprint import columns_fingerprint, files_fingerprint
from embedtab.reporting import Reporter
from embedtab.workflow.checks import check_config_against_data, check_groupby, check_id_masking
from embedtab.workflow.cluster import dask_cluster
from embedtab.workflow.config import WorkflowConfig, load_config
from embedtab.workflow.describe import derived_aggregates, embedding_sizes, schema_summary
from embedtab.workflow.growth import Growth
from embedtab.workflow.inputs import count_rows, dataset, input_schema
from embedtab.workflow.merlin import null_hint, quiet_merlin
from embedtab.workflow.vocabulary_sources import Vocabularies


@dataclass
class FitInputs:
    """What a fit reads, gathered and checked before its plan: the plan's fingerprints cover all of
    it, and every refusal (a missing column, an empty input, a vocabulary from itself) comes
    before any work."""

    config: WorkflowConfig
    config_path: str
    name: str  # of the workflow artifact
    paths: list[Path]  # the data files
    base_dir: Path  # the config's folder: relative side tables and vocabulary tables start there
    side_tables: list[Path]
    dtypes: dict[str, Any]  # column -> dtype of the data
    vocabularies: Vocabularies
    growth: Growth  # the earlier fit of this workflow and what the refit must keep of it
    use_gpu: bool
    params: dict[str, Any]  # the recipe the plan records

    def plan_files(self) -> dict[str, Any]:
        """The files part of the plan (`ArtifactStore.plan`'s arguments). The fit reads only the
        columns the config uses: an edit to another one (an item's description) leaves the workflow
        up to date. Joined and vocabulary tables count whole."""
        data_files = files_fingerprint(self.paths)
        other_files = files_fingerprint(p for p in [*self.side_tables, *self.vocabularies.tables] if p.is_file())
        used = columns_fingerprint(self.paths, [c for c in self.config.input_columns() if c in self.dtypes])
        return {
            "input_files": other_files if used else data_files + other_files,
            "read_files": data_files if used else [],
            "content": used,
            "was": (data_files + other_files, None),
        }


def fit_inputs(store: ArtifactStore, config_path: str, data: Sequence[str], name: str | None, force: bool = False) -> FitInputs:
    """Load the config, find the data, check one against the other and resolve the vocabulary
    sources (a workflow's sources are artifacts the plan must know of)."""
    from embedtab.workflow.compile import side_table_path

    config = load_config(config_path)
    name = name or config.name or Path(config_path).stem
    paths = tables.resolve_inputs(data)
    check_config_against_data(config, paths, config_path)
    if count_rows(paths) == 0:
        raise DataError(f"{', '.join(p.name for p in paths)}: no rows to fit on")
    base_dir = Path(config_path).resolve().parent
    side = [side_table_path(join, base_dir) for join in config.joins]
    dtypes = input_schema(paths)
    vocabularies = Vocabularies(store, config, base_dir, dtypes, config_path)
    if name in [r.name for r in vocabularies.records]:
        raise ConfigError(f"{config_path}: workflow {name!r} cannot take a vocabulary from itself")
    use_gpu = gpu_dataframes_available()
    growth = Growth(store, config, name, paths, force, use_gpu)
    params = {"config": config.as_params(), "config_path": str(config_path), "data": [str(p) for p in paths]}
    return FitInputs(config, config_path, name, paths, base_dir, side, dtypes, vocabularies, growth, use_gpu, params)


def fit_into(
    store: ArtifactStore, staging: Path, inputs: FitInputs, reporter: Reporter, *, dask_scheduler: str | None, part_size: int | None
) -> Made:
    """Fit into the staging folder (the driver publishes it). Categorify writes its statistics
    while fitting, to a scratch folder beside the staging one (same disk, removed after): only
    what `save` writes is published."""
    from embedtab.workflow.compile import Context

    with quiet_merlin(), dask_cluster(dask_scheduler, reporter) as cluster:
        with tempfile.TemporaryDirectory(dir=store.staging_root(), prefix=f"fit{owner_tag()}") as scratch:
            ctx = Context(
                out_path=scratch, base_dir=inputs.base_dir, use_gpu=inputs.use_gpu, vocabulary=inputs.vocabularies, grown=inputs.growth
            )
            workflow, fit_seconds = _fitted_workflow(inputs, ctx, cluster, part_size, reporter)
            cardinalities = _save_checked(workflow, staging, inputs)
            # No earlier id moved (columns numbered by another workflow follow it: its own fit guards them).
            id_spaces = inputs.growth.check(staging, skip=set(inputs.vocabularies.used))
            return Made(
                {**_metadata(inputs, workflow, ctx, cluster, cardinalities), "id_spaces": id_spaces},
                {"fit_seconds": round(fit_seconds, 3)},
                "cuda" if inputs.use_gpu else "cpu",
            )


def _fitted_workflow(inputs: FitInputs, ctx: Any, cluster: str, part_size: int | None, reporter: Reporter) -> tuple[Any, float]:
    """The compiled workflow fitted on the data, and the fit's seconds. The groupby is checked on
    the schema first, so a wrong column fails before the data is read; NVTabular's errors on data
    it cannot fit become DataErrors naming the config and the file."""
    from embedtab.workflow.compile import compile_workflow, feature_graph

    features = feature_graph(inputs.config, ctx)
    check_groupby(inputs.config, features, inputs.paths, inputs.config_path)
    workflow = compile_workflow(inputs.config, ctx, features)
    reporter.info(
        f"fitting workflow {inputs.name!r} on {len(inputs.paths)} file(s) "
        f"({'GPU/cuDF' if inputs.use_gpu else 'CPU/pandas'}, {cluster} Dask)"
    )
    started = time.time()
    try:
        workflow.fit(dataset(inputs.paths, inputs.use_gpu, part_size))
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise DataError(f"fitting {inputs.config_path} on {inputs.paths[0].name}: {type(exc).__name__}: {exc}{null_hint(exc)}") from None
    return workflow, time.time() - started


def _save_checked(workflow: Any, staging: Path, inputs: FitInputs) -> dict[str, dict[str, Any]]:
    """Save the fitted workflow and check what only the fit can tell: shared vocabularies gave the
    source's ids, and `ids` masking names categorified outputs. Returns the cardinalities."""
    from embedtab.workflow import functions

    # The named functions travel inside workflow.pkl, so plain NVTabular loads it without embedtab.
    workflow.save(str(staging), modules_byvalue=[functions])
    inputs.vocabularies.check_fitted(staging)
    cardinalities = embedding_sizes(workflow, derived_aggregates(inputs.params["config"]))
    check_id_masking(inputs.config, cardinalities, inputs.config_path)
    return cardinalities


def _metadata(inputs: FitInputs, workflow: Any, ctx: Any, cluster: str, cardinalities: dict[str, Any]) -> dict[str, Any]:
    """The workflow artifact's metadata: what transform, lookup and `status` read without loading it."""
    return {
        "engine": "gpu" if inputs.use_gpu else "cpu",
        "dask": cluster,
        "input_columns": inputs.config.input_columns(),
        "output_schema": schema_summary(workflow.output_schema),
        "cardinalities": cardinalities,
        "masking": inputs.config.masking_spec(),
        "side_tables": [str(p) for p in ctx.side_tables],
        "vocabularies": inputs.vocabularies.used,
    }
