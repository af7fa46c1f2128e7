"""Item texts (sentence-transformers) and images (OpenCLIP) -> embeddings artifacts."""

from embedtab.encode.stage import EncodeResult, ImageOptions, TextOptions, run_image, run_text

__all__ = ["EncodeResult", "ImageOptions", "TextOptions", "run_image", "run_text"]
