"""Item texts (sentence-transformers) and images (OpenCLIP) -> embeddings artifacts."""

from embedtab.encode.options import EncodeResult, ImageOptions, TextOptions
from embedtab.encode.stage import run_image, run_text

__all__ = ["EncodeResult", "ImageOptions", "TextOptions", "run_image", "run_text"]
