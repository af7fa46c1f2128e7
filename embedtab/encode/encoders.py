"""The Encoder protocol, and the registry of encoders: built in, or installed by entry point.

An encoder is one model behind `embedtab encode`. The stage (stage.py) does everything else --
scanning, reuse of unchanged items, work shards, resume, errors, sealing -- the same way for every
encoder, so an encoder only says what it is and turns a batch into vectors:

    from embedtab.encode.encoders import Encoder

    class MyEncoder(Encoder):
        inputs = ("text",)            # what an input row is: "text" (a string) and/or "image"
        packages = ("my-lib",)        # versions recorded in the artifact's identity

        def __init__(self, model, settings):
            super().__init__(model, settings)
            self.net = my_lib.load(model, device=settings.device)
            self.dim = self.net.dim

        def _embed(self, batch):      # texts: list[str]; images: list of `preprocess` outputs
            return self.net(batch)    # (len(batch), dim) array-like

Register it in the plugin's pyproject.toml, then `embedtab encoders` lists it and
`embedtab encode text ... --encoder my-encoder` uses it:

    [project.entry-points."embedtab.encoders"]
    my-encoder = "my_package:MyEncoder"

Image encoders also set `preprocess`: a picklable function from a decoded RGB `PIL.Image` to a
tensor or array, run in the DataLoader worker processes (embedtab decodes the file, applies EXIF
orientation and flattens alpha first); and, to let JPEGs be decoded on the GPU, `tensor_preprocess`
(an `embedtab.encode.loading.TensorPreprocess` giving the same result on tensors). Vectors are L2-normalised by embedtab when the run asks for
it, unless the encoder sets `normalizes = True` and does it itself.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from embedtab.errors import UsageError
from embedtab.fingerprint import hash_value, library_versions

ENTRY_POINT_GROUP = "embedtab.encoders"
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
    max_pixels: int = 50_000_000  # images above this are skipped before `preprocess`
    decode: str = "auto"  # images: "cpu" (Pillow + preprocess), "gpu" (nvJPEG + tensor_preprocess), auto


def files_stamp(path: str | None) -> Any:
    """Size and mtime of a local model file or folder, so swapped weights are a different encoder."""
    if not path or not os.path.exists(path):
        return None
    target = Path(path)
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    return hash_value([(str(p.relative_to(target)) if p != target else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files[:2000]])


class Encoder:
    """Subclass this (see the module docstring). `name` is set from the registry."""

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
        return {"encoder": cls.name, "model": model, "inputs": settings.inputs, "normalize": settings.normalize,
                "precision": settings.precision, "files": files_stamp(model), "versions": library_versions(cls.packages)}

    @classmethod
    def check(cls, model: str, pretrained: str | None) -> None:
        """Refuse options that cannot work, before any input is read (raise UsageError)."""

    @classmethod
    def accepts(cls, model: str, inputs: str) -> bool:
        """For `--encoder auto`: True when `model` is obviously this encoder's (e.g. its config.json)."""
        return False

    def _embed(self, batch: Sequence[Any]) -> Any:
        raise NotImplementedError

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many of these texts the model cuts (reported in the summary); 0 if unknown."""
        return 0

    def embed_batch(self, batch: Sequence[Any]) -> np.ndarray:
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


# ----------------------------------------------------------------------------- registry
def _builtins() -> dict[str, tuple[type[Encoder], str]]:
    from embedtab.encode import backends

    return {
        "sentence-transformers": (backends.SentenceTransformersEncoder, "built-in"),
        "open-clip": (backends.OpenClipEncoder, "built-in"),
        "hf-clip": (backends.HuggingFaceClipEncoder, "built-in"),
    }


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def available() -> dict[str, tuple[type[Encoder] | None, str, str | None]]:
    """name -> (class or None, where it comes from, why it cannot load). Plugins never shadow a
    built-in name."""
    found: dict[str, tuple[type[Encoder] | None, str, str | None]] = {n: (c, w, None) for n, (c, w) in _builtins().items()}
    for ep in _entry_points():
        if ep.name in found:
            continue
        where = f"{ep.dist.name} {ep.dist.version}" if getattr(ep, "dist", None) else ep.value
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Encoder)):
                raise TypeError(f"{ep.value} is not an embedtab Encoder subclass")
            if not set(cls.inputs) <= set(INPUTS):
                raise TypeError(f"{ep.value}.inputs must be among {INPUTS}, not {cls.inputs}")
            cls.name = ep.name
            found[ep.name] = (cls, where, None)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed with its problem, never fatal
            found[ep.name] = (None, where, f"{type(exc).__name__}: {exc}")
    for name, (cls, _, _) in found.items():
        if cls is not None and not cls.name:
            cls.name = name
    return found


DEFAULTS = {"text": "sentence-transformers", "image": "open-clip"}


def resolve(name: str, model: str, inputs: str) -> type[Encoder]:
    """The encoder class for `--encoder NAME` ("auto": whichever accepts the model, else the
    default of the input kind). Errors name the field (`encoder`), not a flag."""
    registry = available()
    if name == "auto":
        for candidate, (cls, _, _) in registry.items():
            if cls is not None and inputs in cls.inputs and cls.accepts(model, inputs):
                return cls
        name = DEFAULTS[inputs]
    if name not in registry:
        raise UsageError(f"encoder: no encoder named {name!r}; installed: {', '.join(sorted(registry))}")
    cls, where, problem = registry[name]
    if cls is None:
        raise UsageError(f"encoder: {name!r} ({where}) cannot be loaded: {problem}")
    if inputs not in cls.inputs:
        raise UsageError(f"encoder: {name!r} encodes {' and '.join(cls.inputs)}, not {inputs}")
    return cls
