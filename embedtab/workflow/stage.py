"""`embedtab fit-workflow` and `embedtab transform`: the two stages from plan to publish. Their
options are declared in options.py; the work is done by one module per job:

    inputs.py              the input tables: columns, row count, the Merlin Dataset that reads them
    checks.py              the config against the data, the groupby and id masking against the outputs
    vocabulary_sources.py  `categorify: {vocabulary: ...}` from another workflow or a catalog table
    cluster.py             this process or an existing Dask cluster
    fit.py                 compile, fit, save and describe a workflow
    transform.py           apply one: masking, transform, parquet parts plus the Merlin schema, counts
    mask_dataset.py        cold-start masking over whole datasets (masking.py: per partition)
    describe.py            schema, embedding sizes and out-of-vocabulary counts for the metadata
    merlin.py, vocabulary.py   NVTabular opened safely; a fitted workflow's vocabularies, unpickled never

fit-workflow writes workflows/<name>/: exactly what `nvtabular.Workflow.save` writes (metadata.json,
workflow.pkl, categories/), so plain `nvtabular.Workflow.load` opens it.

Trust model: a fitted workflow is unpickled only after every file's recorded sha256 is verified
(see merlin.py, which loads workflows; vocabulary.py reads their category files without unpickling).

transform writes datasets/<name>/: NVTabular's parquet parts plus the Merlin schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedtab.artifacts import ArtifactRecord, ArtifactStore, Driver, RunMode
from embedtab.reporting import SILENT, Reporter

# Re-exported: the names this module held before it was split by job.
from embedtab.workflow.checks import check_config_against_data as check_config_against_data
from embedtab.workflow.cluster import SCHEDULER_ENV as SCHEDULER_ENV
from embedtab.workflow.cluster import dask_cluster as dask_cluster
from embedtab.workflow.describe import derived_aggregates as derived_aggregates
from embedtab.workflow.describe import embedding_sizes as embedding_sizes
from embedtab.workflow.describe import oov_counts as oov_counts
from embedtab.workflow.fit import fit_inputs, fit_into
from embedtab.workflow.inputs import input_schema as input_schema
from embedtab.workflow.merlin import categorify_paths as categorify_paths
from embedtab.workflow.merlin import external_folder as external_folder
from embedtab.workflow.merlin import load_workflow as load_workflow
from embedtab.workflow.merlin import merlin_installed as merlin_installed
from embedtab.workflow.merlin import quiet_merlin as quiet_merlin
from embedtab.workflow.merlin import require_merlin
from embedtab.workflow.options import FitOptions, TransformOptions  # (declared in options.py)
from embedtab.workflow.transform import transform_inputs, transform_into
from embedtab.workflow.vocabulary import read_unique_file as read_unique_file
from embedtab.workflow.vocabulary import vocabulary as vocabulary
from embedtab.workflow.vocabulary_sources import Vocabularies as Vocabularies

_PACKAGES = ("nvtabular", "merlin-core", "pandas", "dask", "distributed", "pyarrow", "numpy")


@dataclass
class FitResult:
    record: ArtifactRecord
    up_to_date: bool


def fit(store: ArtifactStore, options: FitOptions, reporter: Reporter = SILENT, mode: RunMode | None = None) -> FitResult:
    """Fit a workflow config on the data into workflows/<name>/ (see fit.py), unless up to date."""
    require_merlin("fit-workflow")
    inputs = fit_inputs(store, options.config, options.data, options.name, options.force)
    growth = inputs.growth
    # A damaged earlier fit of an append-only workflow is said here, after the decision (not "rebuilding it" first).
    held_back = growth.damage is not None and growth.owns_ids
    driver = Driver(store, mode)
    plan = driver.plan(
        "workflows",
        inputs.name,
        "fit-workflow",
        inputs.params,
        **inputs.plan_files(),
        input_artifacts=inputs.vocabularies.records,
        force=options.force,
        packages=_PACKAGES,
        # A workflow that numbers its ids append-only grows with its data and its config (growth.py):
        # a refit is an update, checked by the guard (no earlier id moves), not a replacement.
        refresh=growth.owns_ids,
        refresh_ignore=("data", "config", "config_path") if growth.owns_ids else ("data",),
        warn=None if held_back else reporter.warn,
    )
    growth.sync(plan.existing)  # (another run may have published one since the inputs were read)
    if plan.existing is not None and not plan.up_to_date:
        growth.refuse_damaged(same_inputs=plan.existing.input_fingerprint == plan.input_fingerprint)
        if held_back and plan.damaged:
            reporter.warn(f"workflows {plan.name!r} is damaged ({'; '.join(plan.damaged[:3])}); rebuilding it")
    scheduler, part_size = options.dask_scheduler, options.part_size
    built = driver.build(
        [plan], lambda staging: [fit_into(store, staging[0], inputs, reporter, dask_scheduler=scheduler, part_size=part_size)]
    )
    return FitResult(built.record, built.up_to_date)


def transform(store: ArtifactStore, options: TransformOptions, reporter: Reporter = SILENT, mode: RunMode | None = None) -> FitResult:
    """Apply a fitted workflow to the data into datasets/<name>/ (see transform.py), unless up to date."""
    require_merlin("transform")
    inputs = transform_inputs(store, options.workflow, options.data, options.name, mask=options.mask, trust=options.trust_workflow)
    driver = Driver(store, mode)
    plan = driver.plan(
        "datasets",
        inputs.name,
        "transform",
        inputs.params,
        **inputs.plan_files(),
        input_artifacts=[inputs.record] if inputs.record else [],
        force=options.force,
        packages=_PACKAGES,
        refresh=True,
        refresh_ignore=("data",),  # a folder or glob that grew (a new day) is an update
        warn=reporter.warn,
        trusted=(inputs.record.key,) if inputs.record and options.trust_workflow else (),
    )
    scheduler, part_size = options.dask_scheduler, options.part_size
    built = driver.build(
        [plan], lambda staging: [transform_into(store, staging[0], inputs, reporter, dask_scheduler=scheduler, part_size=part_size)]
    )
    return FitResult(built.record, built.up_to_date)
