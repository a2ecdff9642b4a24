"""Crops, flips and colour jitter for classification training and testing.

Every function takes and returns ``[H, W, 3]`` uint8 RGB numpy arrays (new arrays, the input
is never modified). Random ones draw from a :class:`numpy.random.Generator` only, so a result
depends on nothing but the image, the generator's state and the arguments.

Paper section 3: training takes 224 x 224 crops; multi-size training also feeds 180 x 180
inputs made by resizing the 224 crop (:func:`resize_square`), so both sizes see the same
content at different resolutions.
"""

from __future__ import annotations

import cv2
import numpy as np

from sppdet.errors import ConfigError, DataError

#: Luma weights of ITU-R BT.601 (R, G, B), as PIL's ``convert("L")`` that torchvision's PIL
#: backend uses for ``adjust_contrast`` / ``adjust_saturation``. They sum to 1, so a grey image
#: stays exactly grey (torchvision's tensor backend uses 0.2989, which does not).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"expected an image [H, W, 3] uint8, got shape {image.shape} "
                        f"dtype {image.dtype}")
    return image


def _check_size(size: int) -> int:
    if int(size) != size or size < 1:
        raise ConfigError(f"a crop size must be a positive integer (pixels), got {size!r}")
    return int(size)


def _check_fits(image: np.ndarray, size: int) -> None:
    height, width = image.shape[:2]
    if height < size or width < size:
        raise DataError(f"cannot cut a {size}x{size} crop from a {width}x{height} image "
                        f"(width x height); resize it so that its shorter side is >= {size}")


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size x size`` crop at a uniformly random whole-pixel position.

    Draws the top offset, then the left offset (``rng.integers``, each uniform over every
    position that keeps the crop inside the image).

    Raises:
        DataError: the image is smaller than ``size`` in a side.
    """
    image = _check_image(image)
    size = _check_size(size)
    _check_fits(image, size)
    height, width = image.shape[:2]
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return image[top:top + size, left:left + size].copy()


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The ``size x size`` crop at offsets ``((h - size) // 2, (w - size) // 2)``.

    Raises:
        DataError: the image is smaller than ``size`` in a side.
    """
    image = _check_image(image)
    size = _check_size(size)
    _check_fits(image, size)
    top = (image.shape[0] - size) // 2
    left = (image.shape[1] - size) // 2
    return image[top:top + size, left:left + size].copy()


def hflip(image: np.ndarray) -> np.ndarray:
    """The image mirrored left to right."""
    return np.ascontiguousarray(_check_image(image)[:, ::-1])


def _grey(pixels: np.ndarray) -> np.ndarray:
    """float32 ``[H, W, 1]`` luma of float32 ``[H, W, 3]`` RGB."""
    return (pixels @ LUMA_WEIGHTS)[..., None]


def adjust_brightness(pixels: np.ndarray, factor: float) -> np.ndarray:
    """``clip(pixels * factor, 0, 255)`` on float32 ``[H, W, 3]`` (torchvision
    ``adjust_brightness``: a blend with a black image)."""
    return np.clip(pixels * np.float32(factor), 0, 255)


def adjust_contrast(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Blend float32 ``[H, W, 3]`` with its mean grey level, ``factor * p + (1 - factor) * m``,
    clipped to ``[0, 255]`` (torchvision ``adjust_contrast``; ``m`` = mean luma of the image)."""
    mean = np.float32(_grey(pixels).mean()) if pixels.size else np.float32(0)
    factor = np.float32(factor)
    return np.clip(factor * pixels + (np.float32(1) - factor) * mean, 0, 255)


def adjust_saturation(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Blend float32 ``[H, W, 3]`` with its grey image, ``factor * p + (1 - factor) * luma(p)``,
    clipped to ``[0, 255]`` (torchvision ``adjust_saturation``)."""
    factor = np.float32(factor)
    return np.clip(factor * pixels + (np.float32(1) - factor) * _grey(pixels), 0, 255)


def colour_jitter(image: np.ndarray, rng: np.random.Generator,
                  strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation, each factor uniform in ``[1 - s, 1 + s]``.

    torchvision ``ColorJitter(brightness=s, contrast=s, saturation=s)`` semantics, except that
    the order is fixed (brightness, contrast, saturation; torchvision shuffles it) and the
    pixels stay float32 between the steps, rounded half up to uint8 once at the end
    (torchvision truncates after each step on uint8 tensors).

    Draws the three factors with one ``rng.uniform(1 - s, 1 + s, size=3)`` call; with
    ``strength == 0`` nothing is drawn and the image is returned unchanged (a copy).

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        rng: the generator.
        strength: ``s`` in ``[0, 1]``.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    image = _check_image(image)
    if not 0 <= strength <= 1:
        raise ConfigError(f"colour jitter strength must be in [0, 1], got {strength}")
    if strength == 0:
        return image.copy()
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    pixels = image.astype(np.float32)
    pixels = adjust_brightness(pixels, brightness)
    pixels = adjust_contrast(pixels, contrast)
    pixels = adjust_saturation(pixels, saturation)
    return np.floor(pixels + np.float32(0.5)).astype(np.uint8)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square ``[S, S, 3]`` image to ``size x size``.

    OpenCV ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging; a copy when ``S ==
    size``. The paper's multi-size training (section 3) resizes the 224 crop to 180 this way.

    Raises:
        DataError: the image is not square.
    """
    image = _check_image(image)
    size = _check_size(size)
    height, width = image.shape[:2]
    if height != width:
        raise DataError(f"resize_square needs a square image, got {width}x{height} "
                        "(width x height)")
    if size == height:
        return image.copy()
    interpolation = cv2.INTER_AREA if size < height else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def train_view(image: np.ndarray, crop_size: int, input_size: int, rng: np.random.Generator,
               *, flip: bool = True, jitter: float = 0.2) -> np.ndarray:
    """One training input: random crop, random flip, colour jitter, resize.

    Steps and draws, in this order: :func:`random_crop` to ``crop_size`` (two integers); when
    ``flip``, one ``rng.random()`` and :func:`hflip` when it is ``< 0.5``; when ``jitter > 0``,
    :func:`colour_jitter` (three uniforms); :func:`resize_square` to ``input_size`` when it
    differs from ``crop_size``. A disabled step draws nothing.

    Args:
        image: ``[H, W, 3]`` uint8 RGB, both sides ``>= crop_size``.
        crop_size: side of the crop in pixels (paper: 224).
        input_size: side of the network input in pixels (paper: 224, or 180 in multi-size
            training).
        rng: the generator.
        flip: random horizontal flip.
        jitter: colour jitter strength (0 turns it off).

    Returns:
        ``[input_size, input_size, 3]`` uint8.
    """
    if not 0 <= jitter <= 1:
        raise ConfigError(f"colour jitter strength must be in [0, 1], got {jitter}")
    input_size = _check_size(input_size)
    view = random_crop(image, crop_size, rng)
    if flip and rng.random() < 0.5:
        view = hflip(view)
    if jitter > 0:
        view = colour_jitter(view, rng, jitter)
    if input_size != crop_size:
        view = resize_square(view, input_size)
    return view
