"""Decoding item images into RGB, robustly: every failure becomes a short reason, never a crash.

Pillow does the decoding; what is written here is only the policy no library has: which modes are
converted how (alpha over white, 16-bit scaled, EXIF orientation applied) and which failures are
reported as what.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedtab.bounds import DEFAULT_MAX_PIXELS


class ImageLoadError(Exception):
    """The image cannot be used; str() is the reason recorded in the errors table."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparent pixels become white, high bit depths are rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow's convert() clips these to 0..255 instead of scaling them.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, fully decode, orient and convert one image, or raise ImageLoadError(reason)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageLoadError("file not found") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read file ({exc.strerror})") from None
    except ValueError:
        raise ImageLoadError("invalid path (contains a NUL byte)") from None
    if size == 0:
        raise ImageLoadError("empty file")
    # --max-pixels governs, in both directions: Pillow's own bomb limit (89 M pixels by default) is
    # the same header-only test we make right after open(), before anything is decoded.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageLoadError(f"image too large ({width}x{height} = {width * height} pixels > {max_pixels})")
                img.load()
                oriented = ImageOps.exif_transpose(img)
                return to_rgb(oriented)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError("not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise ImageLoadError(f"corrupt image ({str(exc).strip() or type(exc).__name__})") from None
