"""Functions and callables that compiled workflows carry (LambdaOp, Rename).

fit-workflow saves workflows with this module pickled *by value* (NVTabular's
`Workflow.save(modules_byvalue=...)`), so a saved workflow holds the code itself and plain
`nvtabular.Workflow.load` opens it where embedtab is not installed (a Triton or training
container). Hence: only numpy here, no other embedtab import. Each function takes one column
(pandas or cuDF Series) and uses only operations both support, so CPU and GPU share them.
"""

from __future__ import annotations

import numpy as np

_DAY = 86_400
_TWO_PI = 2.0 * np.pi
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _unix_seconds(col):
    """Unix seconds from an integer column (seconds) or a datetime64 column."""
    if getattr(col.dtype, "kind", "") == "M":  # datetime64[unit], tz-aware or not
        unit = getattr(col.dtype, "unit", None) or np.datetime_data(col.dtype)[0]
        return col.astype("int64") // _PER_SECOND[unit]
    return col.astype("int64")


def _hour(col):
    """Hour of day 0..23 (UTC)."""
    return (_unix_seconds(col) % _DAY) // 3600


def _weekday(col):
    """Day of week 0..6, Monday = 0 (1970-01-01 was a Thursday, hence the +3)."""
    return (_unix_seconds(col) // _DAY + 3) % 7


def hour_sin(col):
    return np.sin(_TWO_PI * _hour(col) / 24.0).astype("float32")


def hour_cos(col):
    return np.cos(_TWO_PI * _hour(col) / 24.0).astype("float32")


def weekday_sin(col):
    return np.sin(_TWO_PI * _weekday(col) / 7.0).astype("float32")


def weekday_cos(col):
    return np.cos(_TWO_PI * _weekday(col) / 7.0).astype("float32")


def as_float32(col):
    return col.astype("float32")


def as_float64(col):
    return col.astype("float64")


CASTS = {"float32": as_float32, "float64": as_float64}
TIME_FUNCTIONS = {f.__name__: f for f in (hour_sin, hour_cos, weekday_sin, weekday_cos)}


class Prefix:
    """Column renamer for Rename(f=...): prefix + name."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __call__(self, name: str) -> str:
        return f"{self.prefix}{name}"
