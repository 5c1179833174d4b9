"""Decoding image files for the ImageFolder and torchvision sets: PIL image -> 8-bit RGB.

Pillow's convert("RGB") clips 16-bit and float images to 0..255, so a 16-bit file comes out
all white; such images are scaled to 8 bits instead. A file that cannot be decoded raises a
one-line DataError naming it, not a PIL traceback from inside a DataLoader worker.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from tlbench.errors import DataError


def _pil_transform(img_size: int, *, rgb: bool = True) -> Any:
    """PIL image -> [C, img_size, img_size] float in [0, 1]: shorter side resized, centre-cropped.
    rgb=False keeps the image's own mode ("L" gives one channel), for grayscale clips."""
    from torchvision import transforms as T

    square = [T.Resize(img_size), T.CenterCrop(img_size), T.ToTensor()]
    return T.Compose([_ToRGB(), *square] if rgb else square)


class _ToRGB:
    """PIL image -> RGB (picklable, for DataLoader workers)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    """PIL image -> 8-bit RGB; 16/32-bit and float grayscale are scaled, not clipped.

    Pillow's convert("RGB") clips "I;16" / "I" / "F" values to 0..255, so a 16-bit image
    (0..65535) comes out all white.
    """
    if img.mode == "RGB":
        return img
    wide = img.mode.startswith("I;16")
    if wide or img.mode in ("I", "F"):
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        # "I;16*": the dtype's range, so brightness stays comparable across images. "I" (int32)
        # in practice holds 16-bit data (Pillow < 10 opened 16-bit PNGs as "I", as do PGM and
        # some TIFF readers), and dividing by 2**31 would turn it black: values in 0..65535 take
        # the 16-bit range. "F": the usual float convention is 0..1. Values outside those ranges
        # have no known scale: stretch 0 (or a negative minimum) .. this image's maximum (right
        # relative values within the image, though not across images).
        full = 65535.0 if wide or img.mode == "I" else 1.0
        lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))  # min(0, a.min()), ...
        if wide or (lo >= 0.0 and hi <= full):
            unit = a / full
        else:
            unit = (a - lo) / (hi - lo)  # hi > lo: not both inside [0, full]
        img = Image.fromarray(np.rint(unit * 255.0).astype(np.uint8))  # "L", 8-bit luminance
    return img.convert("RGB")


def _load_image(path: str) -> Image.Image:
    """ImageFolder loader: RGB, or a one-line DataError naming the file, not a PIL traceback."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except UnidentifiedImageError:
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        reason = "empty file (0 bytes)" if empty else "not an image Pillow can decode"
    # truncated or corrupt data: PIL raises OSError, ValueError, SyntaxError, EOFError, ...
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
    raise DataError(f"cannot read image {path}: {reason}")
