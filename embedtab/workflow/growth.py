"""Ids that never move: append-only vocabularies, and the guard on every refit.

A trained model's id embeddings, the lookup tables and any index over item vectors are indexed by
Categorify id, so once a workflow has numbered a value its id must not change. NVTabular numbers
a vocabulary afresh on each fit (by frequency), so adding three items renumbers the rest.

`categorify: {append: true}`: when the workflow is refitted over an earlier fit of itself, each
such column is given to NVTabular as `vocabs=` (its own mechanism: the saved workflow holds the
vocabulary, and plain `nvtabular.Workflow.load` applies it): the earlier values in their id order,
then the values new in the data in order of first appearance. Known values keep their ids, new ones
take the next ids, unseen ones stay out of vocabulary, and a value that left the data keeps its id.
The first fit is NVTabular's own.

Every refit that is not forced is checked after the fit, append or not: an earlier value whose id
changed or vanished refuses the fit (nothing is published), naming how many and examples;
`--force` renumbers from scratch. The workflow's metadata records per id space how many ids it
holds, how many were added since the fit it replaced and that none moved (`embedtab status`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore, workflow_vocabularies
from embedtab.errors import DataError, IntegrityError
from embedtab.workflow.config import WorkflowConfig
from embedtab.workflow.vocabulary import Vocabulary, read_unique_file


class Growth:
    """The earlier fit of a workflow and what a refit must keep of it (see the module docstring).

    Vocabularies are found by their files (`categories/unique.<column>.parquet`, named by the column
    the Categorify read, whatever a rename after it calls the output), never by the recorded
    cardinalities, so neither a rename nor an edited manifest hides an id space from the guard."""

    def __init__(self, store: ArtifactStore, config: WorkflowConfig, name: str, paths: list[Path], force: bool, use_gpu: bool = False):
        self.store, self.name, self.paths, self.use_gpu, self.force = store, name, paths, use_gpu, force
        self.appended = config.appended()
        self._read(store.get("workflows", name))

    def _read(self, replaced: ArtifactRecord | None) -> None:
        self.replaced = replaced  # the fit this one replaces, forced or not
        self.previous = None if self.force else replaced  # the fit whose ids this one keeps
        self.damage: IntegrityError | None = None  # why the earlier fit cannot be read
        self._directory: Path | None = None  # the earlier fit's folder, once verified
        self._vocabularies: dict[str, Vocabulary] | None = None  # read from it when first needed
        if replaced is None:
            return
        try:
            self._directory = self.store.verify(replaced)
        except IntegrityError as exc:
            self.damage = exc

    @property
    def _earlier(self) -> dict[str, Vocabulary]:
        """The earlier fit's vocabularies, read only by a fit that runs (an up-to-date one needs none)."""
        if self._vocabularies is None:
            self._vocabularies = _vocabularies(self._directory) if self._directory is not None else {}
        return self._vocabularies

    def sync(self, existing: ArtifactRecord | None) -> None:
        """Read the earlier fit again if another run published one since (the plan's `existing`)."""
        before = self.replaced.fingerprint if self.replaced is not None else None
        if (existing.fingerprint if existing is not None else None) != before:
            self._read(existing)

    @property
    def owns_ids(self) -> bool:
        """Whether the workflow numbers an id space append-only, now or in its earlier fit: its
        refits (new data, or an edited config, even one that drops `append`) are updates that the
        guard checks, not replacements that need --force."""
        return self.appended or (self.replaced is not None and _declares_append(self.replaced.params.get("config")))

    def refuse_damaged(self, same_inputs: bool) -> None:
        """A damaged earlier fit of an append-only workflow is rebuilt only where that gives the
        same ids: from the same data, when it was a first fit (NVTabular numbers the same data the
        same way). Growing from it would keep wrong ids, and a fresh fit of other data renumbers."""
        if self.damage is None or not self.owns_ids or self.previous is None:
            return
        first_fit = not any(space.get("grown_from") for space in self.previous.metadata.get("id_spaces", {}).values())
        if same_inputs and first_fit:
            return
        raise IntegrityError(
            f"{self.damage}; the ids of workflow {self.name!r} cannot grow from it: restore it, or pass --force to renumber from scratch"
        )

    def earlier(self, column: str) -> Vocabulary | None:
        """The earlier fit's vocabulary of `column` (values and ids), None if it had none (or forced)."""
        return self._earlier.get(column) if self.previous is not None else None

    def __call__(self, column: str, node: Any = None) -> Any:
        """The grown vocabulary of an append column for `vocabs=` (a pandas Series in id order), or
        None on a first fit (NVTabular numbers it). `node`: the graph that makes the column from the
        data (ops before the categorify, a join), None when it is a raw input column."""
        import pandas as pd

        if self.previous is None or self.damage is not None:
            return None
        earlier = self.earlier(column)
        seen = self._distinct(column) if node is None else self._derived(column, node)
        if earlier is None:
            values = seen
        else:
            if len(earlier.ids) and not np.array_equal(earlier.ids, np.arange(earlier.ids[0], earlier.ids[0] + len(earlier.ids))):
                raise DataError(
                    f"workflow {self.name!r}: the ids of {column!r} are not consecutive; they cannot grow (pass --force to renumber)"
                )
            order = np.argsort(earlier.ids, kind="stable")
            known = earlier.values.take(pa.array(order))
            seen = _same_type(seen, known.type, column, self.name)
            values = pa.concat_arrays([known, seen.filter(pc.invert(pc.is_in(seen, value_set=known)))])
        return pd.Series(values.to_pandas(), name=column)

    def _distinct(self, column: str) -> pa.Array:
        """The column's distinct non-null values in the data, in order of first appearance (files in
        order). Nulls in a number column are refused: NVTabular 23.08 cannot encode them against a
        given vocabulary (in a string column they map to the null id, 1, as on a first fit)."""
        uniques = []
        for path in self.paths:
            values = tables.read_column(path, column)
            if values.null_count and (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                raise DataError(
                    f"{path}: {values.null_count:,} null {column} value(s); an append-only refit gives NVTabular the "
                    "vocabulary, and NVTabular 23.08 cannot encode nulls in a number column against one: drop or fill them"
                )
            uniques.append(_widened(values.unique().drop_null()))
        if not uniques:
            return pa.array([])
        try:
            return pa.chunked_array(uniques).unique()
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kinds = ", ".join(sorted({str(u.type) for u in uniques}))
            raise DataError(f"{column}: the data files hold it as different types ({kinds})") from None

    def _derived(self, column: str, node: Any) -> pa.Array:
        """The distinct values of a column the graph derives (a bucketized age, a joined column),
        in order of first appearance: the graph before the categorify run by NVTabular itself."""
        import nvtabular as nvt
        import pandas as pd

        from embedtab.workflow.inputs import dataset

        data = dataset(self.paths, self.use_gpu, None)
        workflow = nvt.Workflow(node)
        workflow.fit(data)  # (only what precedes the categorify: stateless ops, or statistics it needs)
        values = workflow.transform(data).to_ddf()[column].compute()
        values = values.to_pandas() if hasattr(values, "to_pandas") else values
        return pa.array(pd.unique(values.dropna()))

    def check(self, saved: Path, skip: set[str]) -> dict[str, dict[str, Any]]:
        """After the fit: refuse it if any earlier id moved or vanished (every such column named),
        unless forced; the id spaces for the metadata (`skip`: columns another workflow numbers)."""
        now = {column: vocab for column, vocab in _vocabularies(saved).items() if column not in skip}
        before = {column: vocab for column, vocab in self._earlier.items() if column not in skip}
        moves = [f"all {len(vocab.ids):,} {column} ids (no longer categorified)" for column, vocab in before.items() if column not in now]
        spaces: dict[str, dict[str, Any]] = {}
        for column, vocab in now.items():
            earlier = before.get(column)
            moved = _moved(column, earlier, vocab) if earlier is not None else None
            if moved is not None:
                moves.append(moved[1])
            spaces[column] = {
                "ids": int(len(vocab.ids)),
                "added": int(len(vocab.ids) - (len(earlier.ids) if earlier is not None and not self.force else 0)),
                "moved": moved[0] if moved is not None else 0,  # (only ever non-zero with --force)
                "grown_from": self.previous.fingerprint if earlier is not None and self.previous is not None else None,
            }
        if moves and not self.force:
            raise DataError(
                f"refitting workflow {self.name!r} would move {'; '.join(moves)}; nothing was written. Declare `append: true` "
                "on its categorify ops to keep them, or pass --force to renumber (every model, dataset and lookup built "
                "on the old ids must then be rebuilt)"
            )
        return spaces


def _vocabularies(directory: Path) -> dict[str, Vocabulary]:
    """Every single-column vocabulary of a fitted workflow folder (joint and combo files, whose
    values span several columns, are not an id space of one column)."""
    found = {}
    for column, path in workflow_vocabularies(directory).items():
        if column in pq.read_schema(path).names:
            found[column] = read_unique_file(path, column, 1 << 62)
    return found


def _widened(values: pa.Array) -> pa.Array:
    """Integers as int64 and strings as string, so files that differ only in width combine."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_integer(values.type) and values.type != pa.int64():
        try:
            return values.cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return values  # (a uint64 beyond int64: left as it is)
    if pa.types.is_large_string(values.type):
        return values.cast(pa.string())
    return values


def _moved(column: str, earlier: Vocabulary, now: Vocabulary) -> tuple[int, str] | None:
    """(how many, 'N of M <column> ids (examples)') when earlier values got other ids or none; else None."""
    import pandas as pd

    try:
        current = now.values.cast(earlier.values.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        current = now.values
    index = pd.Index(current.to_pandas())
    position = index.get_indexer(earlier.values.to_pandas()) if len(index) else np.full(len(earlier.ids), -1)
    new_ids = np.where(position >= 0, now.ids[np.maximum(position, 0)] if len(now.ids) else -1, -1)
    moved = np.flatnonzero(new_ids != earlier.ids)
    if not len(moved):
        return None
    examples = ", ".join(
        f"{earlier.values[int(i)].as_py()!r}: {int(earlier.ids[i])} -> {int(new_ids[i]) if new_ids[i] >= 0 else 'gone'}" for i in moved[:3]
    )
    return len(moved), f"{len(moved):,} of {len(earlier.ids):,} {column} ids ({examples})"


def _declares_append(value: Any) -> bool:
    """Whether a recorded config (as_params) has a categorify op with `append: true`."""
    if isinstance(value, dict):
        return (value.get("op") == "categorify" and value.get("append") is True) or any(_declares_append(v) for v in value.values())
    if isinstance(value, list):
        return any(_declares_append(v) for v in value)
    return False


def _same_type(values: pa.Array, known: pa.DataType, column: str, workflow: str) -> pa.Array:
    """The data's values as the earlier vocabulary's type, where no value changes; else DataError."""
    if values.type == known:
        return values
    numeric = (pa.types.is_integer, pa.types.is_floating)
    strings = (pa.types.is_string, pa.types.is_large_string)
    same_kind = (any(f(values.type) for f in numeric) and any(f(known) for f in numeric)) or (
        any(f(values.type) for f in strings) and any(f(known) for f in strings)
    )
    if same_kind:
        try:
            return values.cast(known)  # a safe cast: 3.5 or an overflow is an error
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    raise DataError(
        f"{column}: workflow {workflow!r} numbered {known} values and the data's {column} is {values.type}; "
        "ids cannot grow across a type change: convert the column back, or pass --force to renumber from scratch"
    )
