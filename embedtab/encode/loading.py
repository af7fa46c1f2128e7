"""Image decoding and preprocessing in torch DataLoader workers, so the model never waits on I/O.

Failures travel back as reasons instead of exceptions: one bad file never stops a batch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from embedtab.encode.images import ImageLoadError, load_rgb


class ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], preprocess: Callable[[Any], torch.Tensor], max_pixels: int):
        self.paths, self.preprocess, self.max_pixels = list(paths), preprocess, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.preprocess(load_rgb(self.paths[index], self.max_pixels)), None
        except ImageLoadError as exc:
            return index, None, str(exc)
        except Exception as exc:  # a preprocessing failure on a decodable image: still one item's problem
            return index, None, f"cannot preprocess image ({type(exc).__name__}: {exc})"


def collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, t) for i, t, _ in items if t is not None]
    errors = [(i, reason) for i, t, reason in items if t is None]
    batch = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], batch, errors


def image_batches(
    paths: Sequence[str],
    preprocess: Callable[[Any], torch.Tensor],
    batch_size: int,
    workers: int,
    pin_memory: bool,
    max_pixels: int,
) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
    """(indices into paths, stacked tensors, [(index, reason)]) per batch, in order."""
    loader = DataLoader(
        ImageFiles(paths, preprocess, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )
    yield from loader
