"""What an input row is -- a text, or the path of an image file -- and how a shard of them is
turned into vectors by any encoder. The stage (stage.py) only talks to these two objects."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtab.encode import sources as src
from embedtab.errors import UsageError

if TYPE_CHECKING:
    from embedtab.encode.loading import TensorPreprocess
    from embedtab.encode.protocol import Encoder

Advance = Callable[[int], None]
Shard = tuple[np.ndarray, list[tuple[int, str]], int]  # vectors, [(index, reason)], truncated texts


class TextRows:
    name, plural = "text", "texts"
    nothing = "text to encode"
    keeps_files = False  # (image rows record path, size and mtime per item for the stat cache)

    def key(self, source: src.Source, value: Any, stat_cache: src.StatCache) -> tuple[bytes, int, int]:
        return src.text_key(value), -1, -1

    def encode(self, encoder: Encoder, texts: list[str], workers: int, advance: Advance) -> Shard:
        # Longest first, in chunks of several batches: the same batches as one big encode() call
        # (sentence-transformers sorts by length too), with progress between chunks.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), encoder.dim), np.float32)
        # (on a GPU the whole shard at once: the encoder keeps it fed and copies back once)
        chunk = len(texts) if encoder.settings.device.startswith("cuda") else encoder.settings.batch_size * 8
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            out[rows] = encoder.embed_batch([texts[i] for i in rows])
            advance(len(rows))
        return out, [], encoder.count_truncated(texts)

    def encode_shards(
        self,
        encoder: Encoder,
        shards: Iterable[tuple[int, Sequence[str]]],
        workers: int,
        advance: Advance,
        decoded: Counter[str] | None = None,
    ) -> Iterator[tuple[int, Shard]]:
        """(`decoded` counts decoded images: texts have none.)"""
        for shard, texts in shards:
            yield shard, self.encode(encoder, list(texts), workers, advance)


class ImageRows:
    name, plural = "image", "images"
    nothing = "an image to encode"
    keeps_files = True

    def key(self, source: src.Source, value: Any, stat_cache: src.StatCache) -> tuple[bytes, int, int]:
        if value is None:
            raise src.ItemProblem("no image path")
        source.check_image_path(value)
        return stat_cache.key(value)

    def encode(self, encoder: Encoder, paths: Sequence[str], workers: int, advance: Advance) -> Shard:
        return next(self.encode_shards(encoder, [(0, paths)], workers, advance))[1]

    def encode_shards(
        self,
        encoder: Encoder,
        shards: Iterable[tuple[int, Sequence[str]]],
        workers: int,
        advance: Advance,
        decoded: Counter[str] | None = None,
    ) -> Iterator[tuple[int, Shard]]:
        """Every shard's images through one loader (its workers start once per run); each shard
        is handed back as soon as its last image is through. `decoded` counts the images each
        decoding path (cpu, gpu) produced."""
        import pyarrow as pa

        from embedtab.encode.loading import ImageBatches

        shards = [(shard, paths if isinstance(paths, pa.Array) else pa.array(list(paths), pa.string())) for shard, paths in shards]
        if not shards:
            return
        ends = np.cumsum([len(paths) for _, paths in shards])
        batches = ImageBatches(
            pa.concat_arrays([paths for _, paths in shards]),
            encoder.preprocess,
            encoder.settings.batch_size,
            workers,
            encoder.settings.device,
            encoder.settings.max_pixels,
            gpu=decode_on_device(encoder),
            decoded=Counter() if decoded is None else decoded,
        )
        current, start = 0, 0
        out = np.zeros((len(shards[0][1]), encoder.dim), np.float32)
        errors: list[tuple[int, str]] = []
        for indices, batch, failed in batches:
            vectors = encoder.embed_batch(batch) if batch is not None else None
            items = sorted([(index, k, "") for k, index in enumerate(indices)] + [(index, -1, reason) for index, reason in failed])
            for index, k, reason in items:
                while index >= ends[current]:  # (batches arrive in order: a shard ends, the next begins)
                    yield shards[current][0], (out, errors, 0)
                    current, start = current + 1, int(ends[current])
                    out, errors = np.zeros((len(shards[current][1]), encoder.dim), np.float32), []
                if k < 0:
                    errors.append((index - start, reason))
                else:
                    if vectors is None:  # (rows come with a batch)
                        raise TypeError("'NoneType' object is not subscriptable")
                    out[index - start] = vectors[k]
            advance(len(items))
        yield shards[current][0], (out, errors, 0)
        for shard, paths in shards[current + 1 :]:  # (only empty shards can remain)
            yield shard, (np.zeros((len(paths), encoder.dim), np.float32), [], 0)


def decode_on_device(encoder: Encoder) -> TensorPreprocess | None:
    """The encoder's TensorPreprocess when this run decodes JPEGs on the GPU, else None
    (settings.decode: auto = on a CUDA device when the encoder can; gpu = required)."""
    decode, device = encoder.settings.decode, encoder.settings.device
    tensor = encoder.tensor_preprocess
    if decode == "cpu":
        return None
    if decode == "gpu" and not device.startswith("cuda"):
        raise UsageError(f"--decode gpu needs a CUDA device; this run is on {device} (use --decode cpu or auto)")
    if decode == "gpu" and tensor is None:
        raise UsageError(
            f"--decode gpu: the {encoder.name} encoder has no tensor preprocessing for model {encoder.model_name!r}; use --decode cpu"
        )
    return tensor if device.startswith("cuda") else None


ROWS: dict[str, TextRows | ImageRows] = {"text": TextRows(), "image": ImageRows()}


def default_workers(device: str = "cpu") -> int:
    """Image decoding processes: on CPU one per spare core, at most 4 (the model needs the rest);
    beside a GPU every core but two, up to 32 (the model runs on the device)."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, min(32, cores - 2))
    return max(0, min(4, cores - 1))
