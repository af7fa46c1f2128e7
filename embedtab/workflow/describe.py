"""What the artifacts of fit-workflow and transform record about their outputs: the schema, the
cardinality and embedding size of each categorical column, and the rows that fell out of vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def embedding_sizes(workflow: Any, skip: frozenset[str] | set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Cardinality and NVTabular's default embedding dim per categorical output column."""
    import nvtabular as nvt

    sizes = nvt.ops.get_embedding_sizes(workflow)
    # With list columns (after a groupby) NVTabular returns (single-hot, multi-hot) dicts.
    # A fixed-length list (groupby max_length) counts as single-hot there; it is a list all the same.
    single, multi = sizes if isinstance(sizes, tuple) else (sizes, {})
    lists = {col.name for col in workflow.output_schema if col.is_list}
    out = {col: {"cardinality": int(card), "embedding_dim": int(dim)} for col, (card, dim) in single.items()}
    out.update({col: {"cardinality": int(card), "embedding_dim": int(dim), "multi_hot": True} for col, (card, dim) in multi.items()})
    for col in lists & out.keys():
        out[col]["multi_hot"] = True
    return dict(sorted((k, v) for k, v in out.items() if k not in skip))


def schema_summary(schema: Any) -> list[dict[str, Any]]:
    """Name, dtype, tags (and whether it is a list) of each output column, as plain JSON."""
    out = []
    for col in schema:
        dtype = col.dtype.to_numpy if hasattr(col.dtype, "to_numpy") else col.dtype
        entry = {"name": col.name, "dtype": str(dtype), "tags": sorted(str(getattr(t, "value", t)) for t in col.tags)}
        if col.is_list:
            entry["list"] = True
            count = col.properties.get("value_count") or {}
            if count.get("max"):  # a fixed length (groupby max_length), what Transformers4Rec sizes by
                entry["value_count"] = {"min": int(count.get("min") or 0), "max": int(count["max"])}
        out.append(entry)
    return out


def derived_aggregates(config: dict[str, Any] | None) -> set[str]:
    """Groupby outputs such as `item_id-count` inherit Categorify's properties but hold no ids."""
    groupby = (config or {}).get("groupby")
    if not groupby:
        return set()
    return {
        f"{col}{groupby['name_sep']}{agg}" for col, aggs in groupby["aggs"].items() for agg in aggs if agg not in ("list", "first", "last")
    }


def oov_counts(directory: Path, schema: Any, skip: set[str]) -> dict[str, dict[str, int]]:
    """Per Categorify output column: rows that fell into the OOV slot(s) and rows that were null."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ranges = {}
    for col in schema:
        props = col.properties or {}
        if col.name not in skip and ("cat_path" in props or "embedding_sizes" in props):
            buckets = props.get("num_buckets") or 1
            ranges[col.name] = (2, 2 + int(buckets))  # NVTabular 23.08: 1 null, 2.. OOV buckets
    counts = {name: {"oov": 0, "null": 0} for name in ranges}
    for part in sorted(directory.glob("*.parquet")):
        table = pq.read_table(part, columns=list(ranges))
        for name, (low, high) in ranges.items():
            values = table.column(name).combine_chunks()
            if hasattr(values.type, "value_type"):  # list columns after a groupby
                values = pc.list_flatten(values)
            counts[name]["oov"] += pc.sum(pc.and_(pc.greater_equal(values, low), pc.less(values, high))).as_py() or 0
            counts[name]["null"] += pc.sum(pc.equal(values, 1)).as_py() or 0
    return counts
