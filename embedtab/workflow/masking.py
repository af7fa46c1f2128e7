"""Cold-start masking: set groups of columns to sentinels together, reproducibly, before transform.

Two kinds of group: `columns` set input columns to sentinels before the workflow (masking user_id
makes the row anonymous, and a join on it then finds no features); `ids` set categorified output
ids to the out-of-vocabulary id after it, leaving every other column -- such as a second, unmasked
key column for content lookups -- as it was, so a model learns to lean on content for unknown ids.

The reference system masked 5 % of training rows with an unseeded random draw per file. Here the
decision for a row is a hash of (seed, group, the row's values) -- or of the entity's id when a
group masks whole entities (`by: user_id`) -- so it does not depend on partitioning, file order,
the number of Dask workers or the machine. No NVTabular op does this, hence these few lines;
they are named module-level functions so Dask can ship them to workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from embedtab.errors import ConfigError
from embedtab.yamlfile import SHOWN, clip, shown


def _mix(values: np.ndarray, seed: int, group: int) -> np.ndarray:
    """splitmix64 of the row hashes xor a (seed, group) salt.

    pandas' hash_key only salts strings, not numbers, so the seed is mixed in here.
    """
    salt = np.uint64((seed * 0x9E3779B97F4A7C15 + group * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        z = (values ^ salt) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def group_masks(frame: Any, spec: dict[str, Any]) -> list[np.ndarray]:
    """One boolean array per group, computed on the original (unmasked) rows."""
    host = frame.to_pandas() if hasattr(frame, "to_pandas") else frame  # cuDF: hash on the host, same masks as CPU
    masks = []
    for index, group in enumerate(spec["groups"]):
        keys = host[[group["by"]]] if group.get("by") else host
        hashed = _mix(pd.util.hash_pandas_object(keys, index=False).to_numpy(), spec["seed"], index)
        masks.append(hashed < np.uint64(group["rate"] * 2.0**64) if group["rate"] < 1 else np.ones(len(host), bool))
    return masks


OOV_ID = 2  # NVTabular 23.08 Categorify: 0 padding, 1 null, 2 the (first) out-of-vocabulary id


def has_id_groups(spec: dict[str, Any] | None) -> bool:
    return bool(spec and any(g.get("ids") for g in spec["groups"]))


def mask_partition(frame: Any, spec: dict[str, Any]) -> Any:
    """The partition with each input group's columns set to their sentinels where its mask is set."""
    masks = group_masks(frame, spec)
    frame = frame.copy()
    for group, mask in zip(spec["groups"], masks):
        if not group.get("columns") or not mask.any():
            continue
        for column, sentinel in group["columns"].items():
            values = frame[column].copy()
            values[mask] = sentinel
            frame[column] = values
    return frame


def mask_ids_partition(output: Any, inputs: Any, spec: dict[str, Any]) -> Any:
    """The transformed partition with each `ids` group's columns set to the OOV id where the
    group's mask -- decided on the matching input partition, like every group -- is set."""
    if len(output) != len(inputs):  # a join that multiplied rows; the config forbids the other causes
        raise ValueError(f"masking ids: the workflow made {len(output)} rows of {len(inputs)}; it needs one row per input row")
    masks = group_masks(inputs, spec)
    output = output.copy()
    for group, mask in zip(spec["groups"], masks):
        if not group.get("ids") or not mask.any():
            continue
        for column in group["ids"]:
            values = output[column].copy()
            values[mask] = OOV_ID
            output[column] = values
    return output


def count_partition(frame: Any, spec: dict[str, Any], targets: dict[str, list[tuple[int, bool]]] | None = None) -> Any:
    """Masked rows per group (g0, g1, ...), and per target (t0, t1, ...) the rows whose id the
    masking left at the out-of-vocabulary id. A target is an output column with the groups that
    touch it in the order they are applied, each with whether it leaves the OOV id: the last group
    that masks a row decides (a later sentinel inside the vocabulary gives the row a real id)."""
    masks = group_masks(frame, spec)
    counts = {f"g{i}": int(m.sum()) for i, m in enumerate(masks)}
    for j, groups in enumerate((targets or {}).values()):
        oov = np.zeros(len(masks[0]) if masks else 0, bool)
        for index, to_oov in groups:
            oov = np.where(masks[index], to_oov, oov)
        counts[f"t{j}"] = int(oov.sum())
    return pd.DataFrame([counts])


def check_sentinels(spec: dict[str, Any], dtypes: dict[str, Any], source: str) -> None:
    """A sentinel must fit its column: numbers in numeric columns, strings in string columns."""
    for index, group in enumerate(spec["groups"]):
        for column, sentinel in (group.get("columns") or {}).items():
            place, shown_column = f"masking.groups[{index}].columns.{clip(column, SHOWN)}", clip(column, SHOWN)
            if column not in dtypes:
                raise ConfigError(f"{source}: masking.groups[{index}].columns: {shown(column)} is not in the data")
            numeric = np.issubdtype(np.dtype(dtypes[column]), np.number) if dtypes[column] != np.dtype(object) else False
            if numeric and isinstance(sentinel, str):
                raise ConfigError(f"{source}: {place}: {shown_column} is numeric, the sentinel {shown(sentinel)} is not")
            if not numeric and not isinstance(sentinel, str):
                raise ConfigError(f"{source}: {place}: {shown_column} holds strings, use a string sentinel")
        if group.get("by") and group["by"] not in dtypes:
            raise ConfigError(f"{source}: masking.groups[{index}].by: {shown(group['by'])} is not in the data")
