"""Item texts (sentence-transformers) and images (OpenCLIP) -> embeddings artifacts.

The names below load on first use, so reading the options (embedtab.encode.options, as the CLI's
help does) imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EncodeResult", "ImageOptions", "TextOptions", "run_image", "run_text"]


def __getattr__(name: str) -> Any:
    if name in ("EncodeResult", "ImageOptions", "TextOptions"):
        from embedtab.encode import options

        return getattr(options, name)
    if name in ("run_image", "run_text"):
        from embedtab.encode import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'embedtab.encode' has no attribute {name!r}")
