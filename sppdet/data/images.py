"""Reading images: one function, whatever the file mode, always RGB uint8.

Pillow decodes; this module only normalises the many modes a real dataset contains
(grayscale, palette, RGBA, 16-bit PNG, CMYK JPEG, EXIF orientation) to one array layout.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sppdet.errors import DataError

# Photos far larger than any detection input: refuse clearly rather than allocate gigabytes
# (a 200 Mpx image is 600 MB as RGB). This is the one limit: Pillow's own decompression-bomb
# guard (a warning above 89 Mpx, an error above 179 Mpx by default) is set to it, so an image
# is either read or refused by the message below, whatever Pillow's defaults.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _too_large(path: Path, width: int, height: int) -> DataError:
    return DataError(f"{path}: {width}x{height} is {width * height / 1e6:.1f} megapixels, more "
                     f"than sppdet reads ({MAX_PIXELS / 1e6:.0f} megapixels, "
                     "sppdet.data.images.MAX_PIXELS); shrink the image")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB uint8.

    EXIF orientation is applied (the array is what a viewer shows). Palette and grayscale
    images are expanded to RGB; an alpha channel is dropped; 16-bit images are scaled to 8 bits
    (top byte); CMYK JPEGs are converted by Pillow.

    Args:
        path: image file (JPEG, PNG, BMP, TIFF, ... anything Pillow reads).

    Returns:
        array ``[H, W, 3]`` uint8, C-contiguous.

    Raises:
        DataError: the file is missing, truncated, not an image, or too large.
    """
    path = Path(path)
    with _opened(path) as image:
        if image.width * image.height > MAX_PIXELS:
            raise _too_large(path, image.width, image.height)
        image.load()
        image = ImageOps.exif_transpose(image)
        array = _to_rgb_uint8(image)
    return np.ascontiguousarray(array)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``path`` opened by Pillow; what fails while it is open (a truncated or foreign file,
    one too large to decode) raises :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings():
            # above MAX_PIXELS Pillow warns (2x: raises); read_image's size check says it better
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: more than sppdet reads ({MAX_PIXELS / 1e6:.0f} megapixels, "
                        f"sppdet.data.images.MAX_PIXELS): {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc})") from exc


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: keep the top byte of 16-bit values
        values = np.asarray(image, dtype=np.uint32 if mode == "I" else np.uint16)
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        gray = np.clip(values, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA").convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` as :func:`read_image` would return it, without decoding pixels.

    Raises:
        DataError: the file is missing or not an image.
    """
    with _opened(Path(path)) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    # EXIF orientations 5-8 swap the axes (rotations by 90 degrees)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height
