"""Device selection, decided once per stage so GPU and CPU share every other line of code."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from embedtab.errors import UsageError

_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,4})?")  # (fullmatch: no trailing newline, ASCII digits)
DEVICE_ENV = "EMBEDTAB_DEVICE"  # what "auto" means: set it to cpu to keep a GPU machine's GPU out of it


def default_device() -> str:
    """$EMBEDTAB_DEVICE (auto, cpu, cuda, cuda:N), else auto."""
    value = os.environ.get(DEVICE_ENV, "").strip() or "auto"
    if not _DEVICE.fullmatch(value):
        raise UsageError(f"invalid {DEVICE_ENV}={value!r}: use auto, cpu, cuda or cuda:N")
    return value


def check_device(requested: str) -> str:
    """Syntax only (no torch import), so bad options fail before any work."""
    if not isinstance(requested, str) or not _DEVICE.fullmatch(requested):
        raise UsageError(f"device: invalid {requested!r}: use auto, cpu, cuda or cuda:N")
    return requested


def torch_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. An explicit cuda without one is an error."""
    check_device(requested)
    if requested == "auto":
        requested = default_device()
    if requested == "cpu":
        return "cpu"
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UsageError(f"device {requested!r} requested but torch sees no CUDA device; use --device cpu")
    index = int(requested.split(":")[1]) if ":" in requested else 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"device {requested!r} requested but only {torch.cuda.device_count()} CUDA devices exist")
    return requested


def gpu_arrays_available() -> bool:
    """True when CuPy imports and sees a CUDA device (and $EMBEDTAB_DEVICE is not cpu)."""
    return default_device() != "cpu" and _cupy_sees_a_device()


@functools.cache
def _cupy_sees_a_device() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA driver errors on machines without a GPU
        return False


def gpu_dataframes_available() -> bool:
    """True when cuDF imports and a GPU is present (NVTabular then runs on cuDF)."""
    return gpu_arrays_available() and _cudf_importable()


@functools.cache
def _cudf_importable() -> bool:
    try:
        import cudf  # noqa: F401

        return True
    except Exception:
        return False


def array_module(use_gpu: bool) -> Any:
    """numpy or cupy: the module every array operation of a stage goes through."""
    if use_gpu:
        import cupy

        return cupy
    import numpy

    return numpy


def to_numpy(array: Any) -> Any:
    """Host copy of a numpy or cupy array."""
    return array.get() if hasattr(array, "get") and not hasattr(array, "__array_interface__") else array
