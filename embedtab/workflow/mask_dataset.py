"""Cold-start masking applied to a transform's Merlin Datasets (`transform --mask`).

masking.py holds the per-partition functions Dask ships to its workers; this module maps them over
the datasets before and after the workflow, and works out which categorified output columns each
masking group sends to the out-of-vocabulary id, so those are counted apart from unseen values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from embedtab.artifacts import workflow_vocabulary


def mask_columns(
    dataset: Any, spec: dict[str, Any], use_gpu: bool, targets: dict[str, list[tuple[int, bool]]]
) -> tuple[Any, list[int], dict[str, int]]:
    """(the dataset with the `columns` groups applied, masked rows per group, per target column the
    rows the masking sets to the out-of-vocabulary id)."""
    from merlin.io import Dataset

    from embedtab.workflow.masking import count_partition, mask_partition

    ddf = dataset.to_ddf()
    meta = {**{f"g{i}": "int64" for i in range(len(spec["groups"]))}, **{f"t{j}": "int64" for j in range(len(targets))}}
    counts = ddf.map_partitions(count_partition, spec, targets, meta=meta).sum().compute()
    masked = ddf.map_partitions(mask_partition, spec, meta=ddf._meta)
    groups = [int(counts[f"g{i}"]) for i in range(len(spec["groups"]))]
    return Dataset(masked, cpu=not use_gpu), groups, {column: int(counts[f"t{j}"]) for j, column in enumerate(targets)}


def mask_ids(output: Any, raw: Any, spec: dict[str, Any], use_gpu: bool) -> Any:
    """Output partition i gets the `ids` masks decided on input partition i: NVTabular transforms
    partition by partition and keeps the rows' order (the config refuses groupby and inner joins)."""
    from merlin.io import Dataset

    from embedtab.workflow.masking import mask_ids_partition

    out = output.to_ddf()
    masked = out.map_partitions(mask_ids_partition, raw.to_ddf(), spec, meta=out._meta, align_dataframes=False)
    return Dataset(masked, schema=output.schema, cpu=not use_gpu)


def mask_targets(
    spec: dict[str, Any], schema: Any, workflow_dir: Path, config: dict[str, Any] | None
) -> dict[str, list[tuple[int, bool]]] | None:
    """Categorify output column -> the masking groups that touch it, in the order they are applied,
    each with whether it leaves the out-of-vocabulary id: `columns` groups that mask the input
    column it was categorified from (named by its category file) -- OOV unless the sentinel is in
    the vocabulary --, then `ids` groups naming it (always OOV). None after a groupby, whose rows
    are aggregates of input rows."""
    if (config or {}).get("groupby"):
        return None
    targets: dict[str, list[tuple[int, bool]]] = {}
    for column in schema:
        props = column.properties or {}
        if "cat_path" not in props and "embedding_sizes" not in props:
            continue
        category_file = Path(str(props.get("cat_path", ""))).name
        source = category_file[len("unique.") : -len(".parquet")] if category_file.startswith("unique.") else column.name
        unique_file = workflow_dir / workflow_vocabulary(source)
        groups = [
            (index, not _in_vocabulary(unique_file, source, group["columns"][source]))
            for index, group in enumerate(spec["groups"])
            if source in (group.get("columns") or {})
        ]
        groups += [(index, True) for index, group in enumerate(spec["groups"]) if column.name in (group.get("ids") or ())]
        if groups:
            targets[column.name] = groups
    return targets


def _in_vocabulary(path: Path, column: str, value: Any) -> bool:
    """Whether a masking sentinel is a value of the vocabulary in `path` (then it gets a real id)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        return bool(pc.any(pc.equal(pq.read_table(path, columns=[column]).column(column), value)).as_py())
    except (pa.ArrowException, KeyError):  # a sentinel of another type than the vocabulary's
        return False
