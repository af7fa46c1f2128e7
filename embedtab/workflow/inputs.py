"""The tables a workflow is fitted on or transforms: their columns, their row count, and the
Merlin Dataset that reads them (parquet or csv, one format at a time)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedtab import tables
from embedtab.errors import UsageError


def dataset(paths: Sequence[Path], use_gpu: bool, part_size: int | None = None) -> Any:
    """A merlin.io.Dataset over the input files (Dask partitions of `part_size` bytes when given)."""
    from merlin.io import Dataset

    suffixes = {p.suffix for p in paths}
    if len(suffixes) > 1:
        raise UsageError("inputs mix parquet and csv files; pass one format at a time")
    engine = "csv" if suffixes == {".csv"} else "parquet"
    kwargs: dict[str, Any] = {"engine": engine, "cpu": not use_gpu}
    if part_size:
        kwargs["part_size"] = part_size
    return Dataset([str(p) for p in paths], **kwargs)


def input_schema(paths: Sequence[Path]) -> dict[str, Any]:
    """Column -> numpy dtype of the first input file (all files must agree for NVTabular anyway)."""
    schema = tables.file_schema(paths[0])
    return {field.name: field.type.to_pandas_dtype() for field in schema}


def count_rows(paths: Sequence[Path]) -> int | None:
    """Rows in the inputs, from parquet footers (None for csv, which would have to be read whole)."""
    if any(p.suffix != ".parquet" for p in paths):
        return None
    return sum(tables.parquet_rows(p) for p in paths)
