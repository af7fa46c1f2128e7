"""`embedtab lookup`: embedding tables indexed by NVTabular's categorified ids.

Row i of a table is the embedding of the item whose Categorify id is i. NVTabular 23.08 reserves
0 (padding), 1 (null) and 2..2+num_buckets-1 (out-of-vocabulary); the vocabulary follows, and its
ids are the RangeIndex of `categories/unique.<col>.parquet`. The vocabulary is read straight from
that file after the workflow's files are checked against their recorded sha256 -- no unpickling.

Rows without an embedding -- reserved ids and vocabulary items that were never encoded -- are
filled (`--fill zeros`, or `mean` of the present rows; the padding row stays zero) and flagged
`present = false`.

Coverage is checked both ways: the share of vocabulary ids that get a vector (`--min-coverage`),
and the share of encoded items the vocabulary reaches (`--min-reachable`, see lookup_options.py) -- an
encoded item outside the vocabulary can never be looked up, which is how cold-start items used to
lose their vectors when the workflow's vocabulary came from training interactions only.

Output (lookups/<name>/), for one embeddings artifact:
    table.parquet     cat_id, <column> (raw id; null for reserved rows), present, embedding
    _embeddings.npy   float32 (cardinality, dim), for merlin-dataloader's EmbeddingOperator / Triton
With several (`-e image -e text`): present_<src> / embedding_<src> columns and _<src>.npy each, or,
with --concat, one `_embeddings.npy` of the vectors side by side (present = all sources present).
    _lookup.json      cardinality, dims, coverage (by_source), fill policy, source fingerprints
(The "_" keeps the sidecars out of merlin.io.Dataset(<folder>), which reads table.parquet.)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab import tables
from embedtab.artifacts import LOOKUP_INFO, LOOKUP_TABLE, ArtifactRecord, ArtifactStore, Driver, Made, RunMode, lookup_dense_name
from embedtab.errors import DataError
from embedtab.lookup_options import FILLS as FILLS  # (re-exported)
from embedtab.lookup_options import LookupOptions  # (declared in lookup_options.py)
from embedtab.options import recipe_of
from embedtab.reporting import SILENT, Reporter
from embedtab.workflow.vocabulary import Vocabulary, vocabulary

_ROW_GROUP = 65_536


@dataclass
class LookupResult:
    record: ArtifactRecord
    up_to_date: bool


# ----------------------------------------------------------------------------- matching ids to the vocabulary
def common_type(vocab: pa.DataType, ids: pa.DataType, column: str) -> pa.DataType | None:
    """The type both sides are cast to (None: already equal); only where no value can change."""
    if vocab == ids:
        return None
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(vocab) for f in numeric) and any(f(ids) for f in numeric):
        return pa.int64()  # casts are safe casts: 3.5 or an overflow is an error, not a rounding
    strings = (pa.types.is_string, pa.types.is_large_string)
    if any(f(vocab) for f in strings) and any(f(ids) for f in strings):
        return pa.large_string()
    raise DataError(
        f"{column!r} ids cannot be matched: the workflow's vocabulary is {vocab} and the "
        f"embeddings' ids are {ids}; re-encode with ids of the same type"
    )


def _cast(values: pa.Array, target: pa.DataType | None, what: str) -> pa.Array:
    if target is None:
        return values
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{what} cannot be converted to {target} without loss ({str(exc).splitlines()[0]})") from None


# ----------------------------------------------------------------------------- one source
@dataclass
class Filled:
    name: str
    matrix: np.ndarray
    present: np.ndarray
    coverage: dict[str, Any] = field(default_factory=dict)


def _fill_from(store: ArtifactStore, record: ArtifactRecord, vocab: Vocabulary, column: str, fill: str) -> Filled:
    import pandas as pd

    directory = store.verify(record)  # damaged vectors are refused, never looked up
    id_column = record.metadata.get("id_column", "item_id")
    dim = int(record.metadata.get("dim", 0))
    first = tables.part_files(directory)
    if not first:
        raise DataError(f"embeddings {record.name!r} have no rows")
    target = common_type(vocab.values.type, pq.read_schema(first[0]).field(id_column).type, column)
    index = pd.Index(_cast(vocab.values, target, f"the vocabulary of {column!r}").to_pandas())
    matrix = np.zeros((vocab.cardinality, dim), np.float32)
    present = np.zeros(vocab.cardinality, bool)
    outside = 0
    outside_examples: list[Any] = []
    for ids, x, path in tables.iter_embeddings(directory, id_column):  # (decoded ahead on threads)
        if x.shape[1] != dim:
            raise DataError(f"{path}: {x.shape[1]} dims, the artifact records {dim}")
        positions = index.get_indexer(_cast(ids, target, f"ids in {path.name}").to_pandas())
        found = positions >= 0
        cat = vocab.ids[positions[found]]
        matrix[cat] = x[found]
        present[cat] = True
        if not found.all():
            outside += int((~found).sum())
            if ids is None:  # (the id column is read: what None.filter raised)
                raise AttributeError("'NoneType' object has no attribute 'filter'")
            outside_examples.extend(ids.filter(pa.array(~found)).to_pylist()[: 5 - len(outside_examples)])
    in_vocab = present[vocab.ids]
    encoded = int(in_vocab.sum()) + outside
    coverage = {
        "vocabulary": int(len(vocab.ids)),
        "with_embedding": int(in_vocab.sum()),
        "coverage": round(float(in_vocab.mean()) if len(in_vocab) else 0.0, 6),
        "missing_examples": vocab.values.filter(pa.array(~in_vocab)).to_pylist()[:5],
        "embeddings_not_in_vocabulary": outside,
        "not_in_vocabulary_examples": outside_examples,
        "encoded": encoded,
        "reachable": round((encoded - outside) / encoded, 6) if encoded else 0.0,
    }
    if fill == "mean" and present.any():
        mean = matrix[present].mean(axis=0)
        matrix[~present] = mean
        matrix[0] = 0.0  # padding stays zero
    return Filled(record.name, matrix, present, coverage)


def _write_table(path: Path, column: str, vocab: Vocabulary, columns: dict[str, Any]) -> None:
    """table.parquet in row groups, so writing it never holds a second copy of the vectors."""
    position = np.full(vocab.cardinality, -1, np.int64)  # row of the vocabulary for each cat id
    position[vocab.ids] = np.arange(len(vocab.ids))
    raw_ids = vocab.values.take(pa.array(position, mask=position < 0))  # reserved rows: null
    writer = None
    try:
        for start in range(0, vocab.cardinality, _ROW_GROUP):
            stop = min(start + _ROW_GROUP, vocab.cardinality)
            data = {"cat_id": pa.array(np.arange(start, stop, dtype=np.int64)), column: raw_ids.slice(start, stop - start)}
            for name, value in columns.items():
                chunk = value[start:stop]
                data[name] = tables.embedding_column(chunk) if chunk.ndim == 2 else pa.array(chunk)
            table = pa.table(data)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, **tables.writer_options(table.column_names))
            writer.write_table(table, row_group_size=_ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()


# ----------------------------------------------------------------------------- run
def run(store: ArtifactStore, options: LookupOptions, reporter: Reporter = SILENT, mode: RunMode | None = None) -> LookupResult:
    options.check()  # (checked when made too; again in case they were changed since)
    sources = [store.require("embeddings", name) for name in options.embeddings]
    wf_record = store.require("workflows", options.workflow)
    driver = Driver(store, mode)
    plan = driver.plan(
        "lookups",
        options.output_name,
        "lookup",
        recipe_of(options),  # embeddings, workflow, column, concat, fill, min_coverage, min_reachable
        input_artifacts=[wf_record, *sources],
        force=options.force,
        packages=("numpy", "pyarrow", "pandas"),
        refresh=True,
        warn=reporter.warn,
        trusted=(wf_record.key,) if options.trust_workflow else (),
    )
    filled: list[Filled] = []

    def make(staging: list[Path]) -> list[Made]:
        started = time.time()
        vocab, _ = vocabulary(store, options.workflow, options.column, options.trust_workflow)
        with reporter.progress("filling lookup tables", total=len(sources), unit="sources") as advance:
            for record in sources:
                filled.append(_fill_from(store, record, vocab, options.column, options.fill))
                advance(1)
        for item in filled:
            _check_coverage(item, vocab, options)
        metadata = _metadata(options, vocab, filled, wf_record, sources)
        _write_lookup(staging[0], options, vocab, filled, metadata)
        return [Made(metadata, {"seconds": round(time.time() - started, 3)})]

    built = driver.build([plan], make)
    if not built.up_to_date:
        _warn_unmatched(filled, options, reporter)
    return LookupResult(built.record, built.up_to_date)


def _check_coverage(item: Filled, vocab: Vocabulary, options: LookupOptions) -> None:
    """Refuse a table that is mostly fill: no id in the vocabulary at all, fewer vocabulary ids with
    a vector than --min-coverage, or fewer encoded items reachable than --min-reachable."""
    cov = item.coverage
    if cov["with_embedding"] == 0:
        raise DataError(
            f"no id of embeddings {item.name!r} is in the vocabulary of {options.column!r} "
            f"(e.g. {cov['not_in_vocabulary_examples'][:3]} vs vocabulary {vocab.values.to_pylist()[:3]})"
        )
    if cov["coverage"] < options.min_coverage:
        raise DataError(
            f"embeddings {item.name!r} cover {cov['with_embedding']:,} of {cov['vocabulary']:,} {options.column} values "
            f"({cov['coverage']:.1%} < --min-coverage {options.min_coverage:.1%}); missing e.g. {cov['missing_examples']}; "
            f"{cov['embeddings_not_in_vocabulary']:,} embeddings have ids outside the vocabulary, e.g. {cov['not_in_vocabulary_examples']}"
        )
    if cov["reachable"] < options.min_reachable:
        raise DataError(
            f"{cov['embeddings_not_in_vocabulary']:,} of {cov['encoded']:,} items of embeddings {item.name!r} are not in the "
            f"{options.column} vocabulary of workflow {options.workflow!r} ({1 - cov['reachable']:.1%}; e.g. "
            f"{cov['not_in_vocabulary_examples'][:3]}): no id can ever look their vectors up. Give the workflow the "
            f"catalog's vocabulary (categorify: {{vocabulary: ...}}, see the README), or pass --min-reachable "
            f"{math.floor(cov['reachable'] * 100) / 100:.2f} to accept it"
        )


def _metadata(
    options: LookupOptions, vocab: Vocabulary, filled: list[Filled], wf_record: ArtifactRecord, sources: list[ArtifactRecord]
) -> dict[str, Any]:
    """_lookup.json and the artifact's metadata: sizes, dims, coverage by source, fingerprints."""
    single = len(filled) == 1
    dims = {item.name: int(item.matrix.shape[1]) for item in filled}
    metadata = {
        "column": options.column,
        "cardinality": vocab.cardinality,
        "vocabulary": int(len(vocab.ids)),
        "reserved_ids": int(vocab.cardinality - len(vocab.ids)),
        "dim": sum(dims.values()) if options.concat or single else None,
        "dims": dims,
        "concat": options.concat,
        "fill": options.fill,
        "by_source": {item.name: item.coverage for item in filled},
        "sources": {"workflow": wf_record.fingerprint, **{r.name: r.fingerprint for r in sources}},
    }
    if single:  # the headline numbers, flat, for the common one-source case
        metadata.update({k: filled[0].coverage[k] for k in ("with_embedding", "coverage", "missing_examples", "reachable")})
    return metadata


def _write_lookup(staging: Path, options: LookupOptions, vocab: Vocabulary, filled: list[Filled], metadata: dict[str, Any]) -> None:
    """The dense matrices (one, or one per source), table.parquet and _lookup.json into staging."""
    single = len(filled) == 1
    columns: dict[str, Any] = {}
    if single or options.concat:
        matrix = filled[0].matrix if single else np.hstack([f.matrix for f in filled])
        present = np.logical_and.reduce([f.present for f in filled])
        np.save(staging / lookup_dense_name(), matrix)
        columns["present"] = present
        if not single:
            columns.update({f"present_{f.name}": f.present for f in filled})
        columns[tables.EMBEDDING] = matrix
    else:
        for f in filled:
            np.save(staging / lookup_dense_name(f.name), f.matrix)
            columns[f"present_{f.name}"] = f.present
            columns[f"{tables.EMBEDDING}_{f.name}"] = f.matrix
    _write_table(staging / LOOKUP_TABLE, options.column, vocab, columns)
    (staging / LOOKUP_INFO).write_text(json.dumps(metadata, indent=2, default=str))


def _warn_unmatched(filled: list[Filled], options: LookupOptions, reporter: Reporter) -> None:
    """Once published, say what the table could not match: encoded items outside the vocabulary
    (never looked up) and vocabulary values without a vector (filled)."""
    for item in filled:
        cov = item.coverage
        if cov["embeddings_not_in_vocabulary"]:
            reporter.warn(
                f"{item.name}: {cov['embeddings_not_in_vocabulary']} of {cov['encoded']} encoded items are not in the "
                f"{options.column} vocabulary and cannot be looked up, e.g. {cov['not_in_vocabulary_examples'][:3]}"
            )
        if cov["missing_examples"]:
            reporter.warn(
                f"{item.name}: {cov['vocabulary'] - cov['with_embedding']} of {cov['vocabulary']} {options.column} values "
                f"have no embedding ({options.fill}, present=false), e.g. {cov['missing_examples'][:3]}"
            )
