"""What an input row is -- a text, or the path of an image file -- and how a shard of them is
turned into vectors by any encoder. The stage (stage.py) only talks to these two objects."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from embedtab.encode import sources as src

Advance = Callable[[int], None]
Shard = tuple[np.ndarray, list[tuple[int, str]], int]  # vectors, [(index, reason)], truncated texts


class TextRows:
    name, plural = "text", "texts"
    nothing = "text to encode"
    keeps_files = False  # (image rows record path, size and mtime per item for the stat cache)

    def key(self, source: src.Source, value: Any, stat_cache: src.StatCache) -> tuple[bytes, int, int]:
        return src.text_key(value), -1, -1

    def encode(self, encoder: Any, texts: list[str], workers: int, advance: Advance) -> Shard:
        # Longest first, in chunks of several batches: the same batches as one big encode() call
        # (sentence-transformers sorts by length too), with progress between chunks.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), encoder.dim), np.float32)
        chunk = encoder.settings.batch_size * 8
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            out[rows] = encoder.embed_batch([texts[i] for i in rows])
            advance(len(rows))
        return out, [], encoder.count_truncated(texts)


class ImageRows:
    name, plural = "image", "images"
    nothing = "an image to encode"
    keeps_files = True

    def key(self, source: src.Source, value: Any, stat_cache: src.StatCache) -> tuple[bytes, int, int]:
        if value is None:
            raise src.ItemProblem("no image path")
        source.check_image_path(value)
        return stat_cache.key(value)

    def encode(self, encoder: Any, paths: list[str], workers: int, advance: Advance) -> Shard:
        from embedtab.encode.loading import image_batches

        out = np.zeros((len(paths), encoder.dim), np.float32)
        errors: list[tuple[int, str]] = []
        for indices, batch, failed in image_batches(paths, encoder.preprocess, encoder.settings.batch_size, workers,
                                                    encoder.settings.device.startswith("cuda"), encoder.settings.max_pixels):
            errors.extend(failed)
            if batch is not None:
                out[indices] = encoder.embed_batch(batch)
            advance(len(indices) + len(failed))
        return out, errors, 0


ROWS = {"text": TextRows(), "image": ImageRows()}


def default_workers() -> int:
    """Image decoding processes: one per spare core, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))
