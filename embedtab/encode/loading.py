"""Image decoding and preprocessing ahead of the model: one torch DataLoader for the whole run
(its worker processes start once, not once per work shard), so the model never waits on I/O.

Two paths, chosen per run (`--decode`) and, on the GPU path, per file:
  cpu  Pillow in the worker processes: decode, EXIF orientation, alpha over white, 16-bit scaled
       (images.py), then the encoder's own `preprocess` -- what every image went through before.
  gpu  the workers only read the file and look at its header; plain 8-bit RGB or greyscale JPEGs
       travel as bytes and are decoded in batches by nvJPEG (`torchvision.io.decode_jpeg` on the
       device), then resized, cropped and normalised on the device by `TensorPreprocess`, which
       repeats the model's preprocessing on tensors (vectors within cosine 0.999 of the PIL path).
       Everything the GPU decoder cannot take -- PNG, CMYK, palette, 16-bit, EXIF-rotated, or a
       JPEG it fails on -- goes the cpu way in the same batch.

Failures travel back as reasons instead of exceptions: one bad file never stops a batch.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from embedtab.encode.images import ImageLoadError, load_rgb

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int, worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: the worker is killed (SIGKILL) as soon as the process that
    started it dies, however it dies -- kill -9 and the OOM killer included -- instead of living on
    as an orphan (torch's own check notices a dead parent only while a worker waits for work).
    Linux's prctl(PR_SET_PDEATHSIG); a parent already gone by then ends the worker at once."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl to call: torch's own check remains
            pass
    if os.getppid() != parent:  # (the parent died before the line above took effect)
        os._exit(1)


@dataclass(frozen=True)
class TensorPreprocess:
    """A model's image preprocessing, for uint8 CHW tensors on any device: resize (the shorter side
    to `size`, then a centre crop; or `squash` to size x size), scale to [0, 1], normalise."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # or "bilinear"
    resize: str = "shortest"  # or "squash"
    crop_rounding: str = "round"  # torchvision's centre crop rounds the offset; Hugging Face's floors it

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        out = []
        for image in images:  # (sizes differ: one resize each, all on the device)
            if self.resize == "squash":
                image = F.resize(image, [self.size, self.size], interpolation=mode, antialias=True)
            else:
                image = F.resize(image, self.size, interpolation=mode, antialias=True)
                height, width = image.shape[-2:]
                if self.crop_rounding == "round":
                    image = F.center_crop(image, [self.size, self.size])
                else:
                    top, left = (height - self.size) // 2, (width - self.size) // 2
                    image = image[..., top : top + self.size, left : left + self.size]
            out.append(image)
        batch = torch.stack(out).float().div_(255.0)
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return batch.sub_(mean).div_(std)


def gpu_decodable(data: bytes, max_pixels: int) -> bool:
    """A JPEG nvJPEG decodes to what Pillow would give: 8-bit RGB/greyscale, no EXIF rotation.
    From the header only; anything else (or any doubt) takes the Pillow path."""
    import io

    from PIL import Image

    if data[:2] != b"\xff\xd8":  # not a JPEG at all
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            return img.format == "JPEG" and img.mode in ("RGB", "L") and width * height <= max_pixels and img.getexif().get(0x0112, 1) == 1
    except Exception:  # unreadable: the Pillow path reports why
        return False


class ImageFiles(Dataset):
    """Item i: (i, preprocessed tensor | None, JPEG bytes | None, reason | None)."""

    def __init__(
        self, paths: Sequence[str], preprocess: Callable[[Any], torch.Tensor] | None, max_pixels: int, raw_jpegs: bool = False
    ) -> None:
        self.paths, self.preprocess, self.max_pixels, self.raw_jpegs = paths, preprocess, max_pixels, raw_jpegs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None, str | None]:
        path = _path(self.paths[index])
        if self.raw_jpegs:  # read once: the header decides, the same bytes go to the device
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except (OSError, ValueError):
                data = b""  # the Pillow path reports why
            if gpu_decodable(data, self.max_pixels):
                return index, None, torch.frombuffer(bytearray(data), dtype=torch.uint8), None
        tensor, reason = cpu_item(path, self.preprocess, self.max_pixels)
        return index, tensor, None, reason


def cpu_item(path: str, preprocess: Callable[[Any], torch.Tensor] | None, max_pixels: int) -> tuple[torch.Tensor | None, str | None]:
    """The Pillow path for one file: (tensor, None), or (None, the reason it cannot be used)."""
    try:
        if preprocess is None:  # an encoder without one (Encoder.preprocess): what calling None raised
            raise TypeError("'NoneType' object is not callable")
        return preprocess(load_rgb(path, max_pixels)), None
    except ImageLoadError as exc:
        return None, str(exc)
    except Exception as exc:  # a preprocessing failure on a decodable image: still one item's problem
        return None, f"cannot preprocess image ({type(exc).__name__}: {exc})"


Collated = tuple[list[int], torch.Tensor | None, list[tuple[int, torch.Tensor]], list[tuple[int, str]]]


def collate(items: list) -> Collated:
    """In the worker: (indices, stacked tensors) of the Pillow path, [(index, JPEG bytes)] for the
    device, [(index, reason)] of the failures."""
    done = [(i, t) for i, t, _, _ in items if t is not None]
    raw = [(i, data) for i, _, data, _ in items if data is not None]
    errors = [(i, reason) for i, t, data, reason in items if t is None and data is None]
    return [i for i, _ in done], (torch.stack([t for _, t in done]) if done else None), raw, errors


@dataclass
class ImageBatches:
    """Batches of (indices into paths, stacked tensors on `device`, [(index, reason)]), in order.

    `gpu`: decode suitable JPEGs on `device` with this preprocessing (None: everything on the
    Pillow path). `decoded` counts the items each path produced (pass a Counter to keep the count).
    """

    paths: Sequence[str]
    preprocess: Callable[[Any], torch.Tensor] | None
    batch_size: int
    workers: int
    device: str
    max_pixels: int
    gpu: TensorPreprocess | None = None
    decoded: Counter[str] = field(default_factory=Counter)

    def __iter__(self) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
        loader = DataLoader(
            ImageFiles(self.paths, self.preprocess, self.max_pixels, raw_jpegs=self.gpu is not None),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=self.device.startswith("cuda"),
            prefetch_factor=4 if self.workers else None,
            worker_init_fn=functools.partial(die_with_parent, os.getpid()) if self.workers else None,
        )
        for collated in loader:
            yield self.assemble(*collated)

    def assemble(
        self, indices: list[int], stacked: torch.Tensor | None, raw: list, errors: list
    ) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
        pieces: list[tuple[list[int], torch.Tensor]] = []
        errors = list(errors)
        if stacked is not None:
            pieces.append((list(indices), stacked.to(self.device, non_blocking=True)))
            self.decoded["cpu"] += len(indices)
        if raw:
            images = self._decode([data for _, data in raw])
            good = [(index, image) for (index, _), image in zip(raw, images) if image is not None]
            if good:
                if self.gpu is None:  # raw JPEGs come only with a GPU preprocessing (raw_jpegs above)
                    raise TypeError("'NoneType' object is not callable")
                pieces.append(([index for index, _ in good], self.gpu([image for _, image in good])))
                self.decoded["gpu"] += len(good)
            fallback = [index for (index, _), image in zip(raw, images) if image is None]
            done = []
            for index in fallback:  # the GPU decoder refused it: the Pillow path decides
                tensor, reason = cpu_item(_path(self.paths[index]), self.preprocess, self.max_pixels)
                if tensor is None:
                    errors.append((index, reason))
                else:
                    done.append((index, tensor))
            if done:
                pieces.append(([index for index, _ in done], torch.stack([t for _, t in done]).to(self.device)))
                self.decoded["cpu"] += len(done)
        if not pieces:
            return [], None, sorted(errors)
        if len(pieces) == 1:
            return pieces[0][0], pieces[0][1], sorted(errors)
        order = sorted((index, p, row) for p, (piece_indices, _) in enumerate(pieces) for row, index in enumerate(piece_indices))
        batch = torch.cat([tensor for _, tensor in pieces])
        offsets = [0]
        for piece_indices, _ in pieces[:-1]:
            offsets.append(offsets[-1] + len(piece_indices))
        take = torch.tensor([offsets[p] + row for _, p, row in order], device=batch.device)
        return [index for index, _, _ in order], batch.index_select(0, take), sorted(errors)

    def _decode(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Batched nvJPEG decoding; when the batch fails, file by file, a failure giving None."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for item in data:
                try:
                    out.append(decode_jpeg(item, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out


def _path(value: Any) -> str:
    return value.as_py() if hasattr(value, "as_py") else value
