"""`categorify: {vocabulary: ...}`: a workflow's ids taken from another workflow or a catalog table.

Resolved for the compiler while the fit builds the graph, remembered for the artifact's metadata,
and checked after the fit (NVTabular must have given exactly the source's ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore, workflow_vocabulary
from embedtab.errors import ArtifactNotFound, ConfigError, DataError, UsageError
from embedtab.workflow.config import WorkflowConfig
from embedtab.workflow.vocabulary import read_unique_file, vocabulary
from embedtab.yamlfile import clip, file_problem


class Vocabularies:
    """Resolves `categorify: {vocabulary: ...}` for the compiler and remembers what it handed out.

    `workflow:` sources are read from the source artifact's category file after its sha256 is
    checked (nothing unpickled); `table:` sources are the table's distinct values in order of
    first appearance, so appending rows to a catalog keeps every existing id.
    """

    def __init__(self, store: ArtifactStore, config: WorkflowConfig, base_dir: Path, dtypes: dict[str, Any], source: str):
        self.store, self.base_dir, self.dtypes, self.source = store, base_dir, dtypes, source
        self.used: dict[str, dict[str, Any]] = {}  # output column -> where its vocabulary came from
        self._expected: dict[str, tuple[Any, Any]] = {}  # column -> (values, ids) a workflow source gave
        self.records: list[ArtifactRecord] = []
        self.tables: list[Path] = []
        for spec in config.vocabulary_sources():  # known before the plan, so fingerprints cover them
            if spec.workflow is not None:
                if spec.workflow not in [r.name for r in self.records]:
                    try:
                        self.records.append(store.require("workflows", spec.workflow))
                    except ArtifactNotFound as exc:
                        raise ConfigError(f"{source}: categorify vocabulary: {exc}; fit workflow {spec.workflow!r} first") from None
            else:
                path = self.table_path(spec)
                problem = file_problem(path)
                if problem:  # (/dev/zero or a directory is no table either)
                    raise ConfigError(f"{source}: categorify vocabulary table {clip(path, 200)} {problem}")
                if path not in self.tables:
                    self.tables.append(path)

    def table_path(self, spec: Any) -> Path:
        path = Path(spec.table)
        return path if path.is_absolute() else self.base_dir / path

    def __call__(self, spec: Any, name: str) -> Any:
        import pandas as pd

        column = spec.column or name
        if spec.workflow is not None:
            try:
                vocab, record = vocabulary(self.store, spec.workflow, column, trust=False)
            except UsageError as exc:
                raise ConfigError(f"{self.source}: vocabulary of {name!r}: {exc}") from None
            order = np.argsort(vocab.ids, kind="stable")
            values = vocab.values.take(pa.array(order))
            self._expected[name] = (values, vocab.ids[order])
            origin = {"workflow": spec.workflow, "column": column, "fingerprint": record.fingerprint}
        else:
            path = self.table_path(spec)
            try:
                table = tables.read_column(path, column)
            except DataError as exc:
                raise ConfigError(f"{self.source}: vocabulary of {name!r}: {exc}") from None
            values = pa.array(pd.Series(table.to_pandas()).dropna().drop_duplicates().to_numpy())
            origin = {"table": str(path), "column": column}
        self._check_type(name, values.type, origin)
        self.used[name] = {**origin, "size": len(values)}
        return pd.Series(values.to_pandas(), name=name)

    def _check_type(self, name: str, kind: pa.DataType, origin: dict[str, Any]) -> None:
        """An id vocabulary of strings never matches integer data (everything would be OOV)."""
        if name not in self.dtypes:
            return  # a derived column (after a rename or bucketize): NVTabular matches what it can
        data_numeric = np.issubdtype(np.dtype(self.dtypes[name]), np.number)
        vocab_numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if data_numeric != vocab_numeric:
            where = f"workflow {origin['workflow']!r}" if "workflow" in origin else origin["table"]
            raise ConfigError(
                f"{self.source}: the vocabulary of {name!r} from {where} ({origin['column']}) holds {kind} values, "
                f"the data's {name} is {np.dtype(self.dtypes[name])}; every value would be out of vocabulary"
            )

    def check_fitted(self, saved: Path) -> None:
        """Ids after the fit must be exactly the source workflow's (they differ if num_buckets does)."""
        for name, (values, ids) in self._expected.items():
            unique = saved / workflow_vocabulary(name)
            got = read_unique_file(unique, name, 1 << 62)
            same = (
                len(got.ids) == len(ids)
                and np.array_equal(np.asarray(got.ids), np.asarray(ids))
                and got.values.equals(values.cast(got.values.type))
            )
            if not same:
                origin = self.used[name]
                raise ConfigError(
                    f"{self.source}: {name} would get other ids than in workflow {origin['workflow']!r}, whose "
                    f"vocabulary starts at id {int(ids[0]) if len(ids) else '?'} (num_buckets there reserves several "
                    "out-of-vocabulary ids); share vocabularies only from categorify ops without num_buckets"
                )
