"""What an encoder is: the `Encoder` base class and the `Settings` it is built with.

How to write and register one is in encoders.py, which re-exports these names (plugins import
`from embedtab.encode.encoders import Encoder`). They live apart from the registry so that the
built-in encoders (backends.py) subclass `Encoder` and the registry lists them without a circle.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from embedtab.bounds import DEFAULT_MAX_PIXELS
from embedtab.fingerprint import hash_value, library_versions

if TYPE_CHECKING:
    import torch

INPUTS = ("text", "image")


@dataclass(frozen=True)
class Settings:
    """How a run wants the model used; passed to the encoder's constructor."""

    inputs: str  # "text" or "image": the rows of this run
    device: str = "cpu"  # resolved: "cpu", "cuda", "cuda:N"
    precision: str = "fp32"  # resolved: fp32 on CPU; fp16/bf16 autocast on CUDA
    batch_size: int = 64
    normalize: bool = True
    pretrained: str | None = None  # OpenCLIP checkpoints (tag or file); other encoders ignore it
    max_pixels: int = DEFAULT_MAX_PIXELS  # images above this are skipped before `preprocess`
    decode: str = "auto"  # images: "cpu" (Pillow + preprocess), "gpu" (nvJPEG + tensor_preprocess), auto


def files_stamp(path: str | None) -> Any:
    """Size and mtime of a local model file or folder, so swapped weights are a different encoder."""
    if not path or not os.path.exists(path):
        return None
    target = Path(path)
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    return hash_value(
        [(str(p.relative_to(target)) if p != target else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files[:2000]]
    )


class Encoder:
    """Subclass this (see embedtab.encode.encoders). `name` is set from the registry."""

    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("text",)
    packages: ClassVar[tuple[str, ...]] = ()
    normalizes: ClassVar[bool] = False  # True: `_embed` already honours settings.normalize
    default_model: ClassVar[str | None] = None  # used when the run names no model
    model_help: ClassVar[str] = "a model name or path"

    dim: int = 0
    preprocess: Callable[[Any], Any] | None = None
    # Optional: the same preprocessing for uint8 CHW tensors on the device (loading.TensorPreprocess),
    # which lets JPEGs be decoded on the GPU; None keeps every image on the Pillow path.
    tensor_preprocess: Any = None
    preprocess_config: dict[str, Any] | None = None  # recorded in the artifact (image encoders)
    warning: str | None = None  # shown by the run once the model is loaded (e.g. "weights are random")
    model_seconds: float = 0.0

    def __init__(self, model: str, settings: Settings):
        self.model_name, self.settings = model, settings

    @classmethod
    def identity(cls, model: str, settings: Settings) -> dict[str, Any]:
        """What decides the vectors, known before the model loads: vectors of an earlier run with
        the same identity are reused. Override to add what else matters (a checkpoint file)."""
        return {
            "encoder": cls.name,
            "model": model,
            "inputs": settings.inputs,
            "normalize": settings.normalize,
            "precision": settings.precision,
            "files": files_stamp(model),
            "versions": library_versions(cls.packages),
        }

    @classmethod
    def check(cls, model: str, pretrained: str | None) -> None:
        """Refuse options that cannot work, before any input is read (raise UsageError)."""

    @classmethod
    def accepts(cls, model: str, inputs: str) -> bool:
        """For `--encoder auto`: True when `model` is obviously this encoder's (e.g. its config.json)."""
        return False

    def _embed(self, batch: Any) -> Any:  # texts, preprocessed images or a stacked image tensor
        raise NotImplementedError

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many of these texts the model cuts (reported in the summary); 0 if unknown."""
        return 0

    def embed_batch(self, batch: Sequence[Any] | torch.Tensor) -> np.ndarray:
        started = time.perf_counter()
        try:
            out = self._embed(batch)
            if hasattr(out, "detach"):  # a torch tensor
                out = out.detach().float().cpu().numpy()
            out = np.asarray(out, dtype=np.float32)
        finally:
            self.model_seconds += time.perf_counter() - started
        if out.shape != (len(batch), self.dim):
            raise ValueError(f"encoder {self.name!r} returned shape {out.shape} for {len(batch)} inputs of dim {self.dim}")
        if self.settings.normalize and not self.normalizes:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.maximum(norms, 1e-12)
        return out
