"""What fit-workflow checks before it fits: every refusal names the place in the config.

Before the plan, the config against the data (columns that exist, numeric ops on numeric columns,
join keys and side tables, masking sentinels of the columns' types); before the fit, the groupby
against what the feature groups produce; after it, the `ids` masking groups against the
categorified outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedtab.errors import ConfigError
from embedtab.workflow.config import NUMERIC_OPS, WorkflowConfig
from embedtab.workflow.inputs import input_schema
from embedtab.yamlfile import SHOWN, clip, file_problem, names


def check_config_against_data(config: WorkflowConfig, paths: Sequence[Path], config_path: str) -> None:
    """Missing columns and numeric ops on non-numeric columns, named by place in the config."""
    dtypes = input_schema(paths)
    raw_dtypes = dict(dtypes)
    _check_joins(config, dtypes, Path(config_path).resolve().parent, config_path)
    for index, group in enumerate(config.features):
        missing = [c for c in group.flat_columns() if c not in dtypes]
        if missing:
            raise ConfigError(
                f"{config_path}: features[{index}].columns: {names(missing)} not in the data ({paths[0].name} has {names(dtypes, 30)})"
            )
        _check_numeric_op(group, index, dtypes, config_path)
    if config.masking is not None:
        from embedtab.workflow.masking import check_sentinels

        check_sentinels(config.masking.model_dump(), raw_dtypes, config_path)


def _check_joins(config: WorkflowConfig, dtypes: dict[str, Any], base_dir: Path, config_path: str) -> None:
    """Each side table exists and holds its keys and columns, the data holds the keys; the joined
    columns are added to `dtypes`, since the feature groups after the join may use them."""
    for index, join in enumerate(config.joins):
        from embedtab.workflow.compile import side_table_path

        side = side_table_path(join, base_dir)
        problem = file_problem(side)
        if problem:  # (/dev/zero or a directory is no table either)
            raise ConfigError(f"{config_path}: joins[{index}].path: {clip(side, 200)} {problem}")
        side_types = input_schema([side])
        missing = [c for c in join.keys + join.columns if c not in side_types]
        if missing:
            raise ConfigError(
                f"{config_path}: joins[{index}]: {names(missing)} not in {clip(side.name, 80)} (it has {names(side_types, 30)})"
            )
        absent = [k for k in join.keys if k not in dtypes]
        if absent:
            raise ConfigError(f"{config_path}: joins[{index}].on: {names(absent)} not in the data")
        dtypes.update({c: side_types[c] for c in join.columns})


def _check_numeric_op(group: Any, index: int, dtypes: dict[str, Any], config_path: str) -> None:
    """A group whose first op is numeric (normalize, bucketize, ...) needs numeric columns (or
    datetimes, for time_features): NVTabular would fail deep inside the fit otherwise."""
    first = group.ops[0].op if group.ops else None
    if first not in NUMERIC_OPS:
        return

    def usable(column: str) -> bool:
        dtype = np.dtype(dtypes[column])
        return np.issubdtype(dtype, np.number) or (first == "time_features" and np.issubdtype(dtype, np.datetime64))

    wrong = [c for c in group.flat_columns() if not usable(c)]
    if wrong:
        raise ConfigError(
            f"{config_path}: features[{index}].ops[0]: {first} needs numeric columns; "
            + ", ".join(f"{clip(c, SHOWN)} is {np.dtype(dtypes[c])}" for c in wrong[:12])
        )


def check_groupby(config: WorkflowConfig, workflow_features: Any, paths: Sequence[Path], config_path: str) -> None:
    """Groupby columns must be outputs of the feature groups (checked on the schema, before fit)."""
    if config.groupby is None:
        return
    import nvtabular as nvt
    from merlin.io import Dataset

    schema = Dataset([str(paths[0])], engine="parquet" if paths[0].suffix == ".parquet" else "csv", cpu=True).schema
    produced = nvt.Workflow(workflow_features).fit_schema(schema).output_schema
    outputs = produced.column_names
    spec = config.groupby
    missing = [c for c in [*spec.by, *spec.sort, *spec.aggs] if c not in outputs]
    if missing:
        raise ConfigError(
            f"{config_path}: groupby: {names(missing)} not produced by the feature groups (they produce {names(outputs, 30)})"
        )
    if spec.max_length is not None:  # padded with 0: a list of text cannot hold it
        text = [c for c, aggs in spec.aggs.items() if "list" in aggs and not np.issubdtype(np.dtype(produced[c].dtype.to_numpy), np.number)]
        if text:
            raise ConfigError(f"{config_path}: groupby.max_length pads lists with 0, and {names(text)} hold text: categorify them first")


def check_id_masking(config: WorkflowConfig, cardinalities: dict[str, Any], source: str) -> None:
    """The columns of `ids` masking groups must be categorified outputs of the fitted workflow."""
    for index, group in enumerate(config.masking.groups if config.masking else []):
        unknown = [c for c in group.ids or [] if c not in cardinalities]
        if unknown:
            raise ConfigError(
                f"{source}: masking.groups[{index}].ids: {names(unknown)} not a categorified output of this workflow "
                f"(those are: {names(cardinalities, 30) or 'none'})"
            )
