"""Phase 2, plan: which items reuse a vector of the artifact being updated (same encoder, same
content key) and which distinct new contents must be encoded, in input order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from embedtab.artifacts import ArtifactRecord
from embedtab.encode import sources as src
from embedtab.encode.scan import Scan


@dataclass
class Previous:
    """The artifact being updated, when its vectors can be reused (same encoder)."""

    record: ArtifactRecord
    keys: np.ndarray  # sorted S16
    rows: np.ndarray  # artifact row of each sorted key

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Artifact row per key, -1 where the key is not in the previous artifact."""
        if len(self.keys) == 0:
            return np.full(len(keys), -1, np.int64)
        where = np.searchsorted(self.keys, keys)
        where = np.minimum(where, len(self.keys) - 1)
        found = self.keys[where] == keys
        return np.where(found, self.rows[where], -1)


def previous_artifact(record: ArtifactRecord | None, index: pa.Table | None, identity: dict[str, Any]) -> Previous | None:
    if record is None or index is None or record.metadata.get("encoder") != identity:
        return None
    rows = np.asarray(index.column("row").to_numpy(zero_copy_only=False), np.int64)
    keys = src.keys_from_arrow(index.column("key"))
    usable = rows >= 0
    keys, rows = keys[usable], rows[usable]
    order = np.argsort(keys, kind="stable")
    return Previous(record, keys[order], rows[order])


@dataclass
class WorkList:
    reuse_rows: np.ndarray  # per item: row in the previous artifact, or -1
    work_of_item: np.ndarray  # per item: index into `positions`, or -1
    positions: np.ndarray  # per distinct new content: position of its first item (ascending)


def work_list(scan: Scan, previous: Previous | None) -> WorkList:
    n = len(scan.keys)
    bad = np.zeros(n, bool)
    bad[list(scan.problems)] = True
    reuse = previous.lookup(scan.keys) if previous is not None else np.full(n, -1, np.int64)
    reuse[bad] = -1
    need = np.flatnonzero(~bad & (reuse < 0))
    work_of_item = np.full(n, -1, np.int64)
    if len(need) == 0:
        return WorkList(reuse, work_of_item, np.zeros(0, np.int64))
    # One encode per distinct content, ordered by where it first appears. (Work stays in input
    # order so shards fill while the input streams by; texts are sorted by length within a shard.)
    _, first, inverse = np.unique(scan.keys[need], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    work_of_item[need] = rank[inverse.ravel()]
    return WorkList(reuse, work_of_item, need[first[order]])
