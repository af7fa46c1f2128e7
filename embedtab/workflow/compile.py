"""WorkflowConfig -> a real NVTabular graph (nvtabular.ops only; nothing re-implemented)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedtab.workflow import config as cfg
from embedtab.workflow.functions import TIME_FUNCTIONS


def _apply(node: Any, op: Any, out_path: str) -> Any:
    import numpy as np
    import nvtabular as nvt
    from merlin.schema import Tags

    ops = nvt.ops
    if isinstance(op, cfg.Categorify):
        kwargs: dict[str, Any] = {"freq_threshold": op.freq_threshold, "max_size": op.max_size, "out_path": out_path}
        if op.num_buckets is not None:
            kwargs["num_buckets"] = op.num_buckets
        if op.dtype is not None:
            kwargs["dtype"] = op.dtype
        return node >> ops.Categorify(**kwargs)
    if isinstance(op, cfg.Normalize):
        return node >> ops.Normalize(out_dtype=np.dtype(op.out_dtype))
    if isinstance(op, cfg.FillMissing):
        return node >> ops.FillMissing(fill_val=op.fill_val, add_binary_cols=op.add_binary_cols)
    if isinstance(op, cfg.Log):
        return node >> ops.LogOp()
    if isinstance(op, cfg.Bucketize):
        return node >> ops.Bucketize(op.boundaries)
    if isinstance(op, cfg.Rename):
        return node >> ops.Rename(postfix=op.postfix, name=op.name) if not op.prefix else node >> ops.Rename(
            f=_Prefix(op.prefix)
        )
    if isinstance(op, cfg.AddTags):
        return node >> ops.AddTags([Tags(t) for t in op.tags])
    if isinstance(op, cfg.TimeFeatures):
        branches = [
            node >> ops.LambdaOp(TIME_FUNCTIONS[feature], dtype=np.float32) >> ops.Rename(postfix=f"_{feature}")
            for feature in op.features
        ]
        total = branches[0]
        for branch in branches[1:]:
            total = total + branch
        return total
    raise TypeError(f"no compiler for {type(op).__name__}")  # config.py and this file disagree


class _Prefix:
    """Picklable column renamer (Rename(f=...) is pickled with the workflow)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __call__(self, name: str) -> str:
        return f"{self.prefix}{name}"


def compile_workflow(config: cfg.WorkflowConfig, out_path: str | Path) -> Any:
    """Build the nvtabular.Workflow; `out_path` is where stat ops write during fit."""
    import nvtabular as nvt

    output = None
    for group in config.features:
        node: Any = list(group.columns)
        for op in group.ops:
            node = _apply(node, op, str(out_path))
        if isinstance(node, list):
            node = nvt.ColumnSelector(node) >> nvt.ops.AddMetadata()  # a pass-through group
        output = node if output is None else output + node
    return nvt.Workflow(output)
