"""PCA of embeddings artifacts with saved, re-appliable projections (see stage.py).

The names below load on first use, so reading the options (embedtab.reduce.options, as the CLI's
help does) imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

_OPTIONS = ("ApplyOptions", "BACKENDS", "ReduceOptions", "parse_memory")
_PCA = ("Covariance", "Projection", "Spectrum", "fix_signs")
_STAGE = ("ReduceResult", "apply", "choose_backend", "default_memory", "run")
__all__ = sorted(_OPTIONS + _PCA + _STAGE)


def __getattr__(name: str) -> Any:
    if name in _OPTIONS:
        from embedtab.reduce import options

        return getattr(options, name)
    if name in _PCA:
        from embedtab.reduce import pca

        return getattr(pca, name)
    if name in _STAGE:
        from embedtab.reduce import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'embedtab.reduce' has no attribute {name!r}")
