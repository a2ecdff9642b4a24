"""Parameters of the synthetic dataset and the shape classes it draws.

Free of numpy and OpenCV: the command line's options take their defaults from here.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

from sppdet.errors import ConfigError

#: All shape classes the generator can draw, in the order ``n_classes`` takes them.
SHAPE_CLASSES: tuple[str, ...] = (
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "star",
    "ellipse",
    "hexagon",
)

SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")


@dataclass(frozen=True)
class DemoDataConfig:
    """Parameters of the synthetic dataset; every field changes the generated data.

    Attributes:
        seed: seed of all randomness.
        n_trainval: number of trainval images (split into train and val).
        n_test: number of test images (0 gives an empty test split).
        n_classes: number of classes, the first ``n_classes`` of :data:`SHAPE_CLASSES` (1 to 8).
        image_width: nominal image width in pixels.
        image_height: nominal image height in pixels.
        size_jitter: each image side is the nominal one times a factor drawn uniformly from
            ``[1 - size_jitter, 1 + size_jitter]``.
        portrait_fraction: probability that an image swaps width and height (portrait).
        min_objects: fewest objects an image aims for (placement can give up on one that does
            not fit, so an image can rarely have fewer, but never zero).
        max_objects: most objects in an image.
        min_object_size: smallest longer side of a normal object, in pixels.
        max_object_size: largest longer side, in pixels (capped to 80 % of the shorter image
            side).
        tiny_fraction: probability that an object is tiny instead (longer side from 8 pixels
            to ``min_object_size``); most of them end up ``difficult``.
        truncation_fraction: probability that an object is placed across the image border.
        min_visible: an object is never occluded or cut so much that less than this fraction
            of its shape stays visible (placements that would do so are redrawn).
        difficult_min_visible: objects with a smaller visible fraction are ``difficult``.
        difficult_min_size: objects whose visible box has ``sqrt(w * h)`` below this many
            pixels are ``difficult``.
        val_fraction: fraction of trainval that goes to val (at least one image each in train
            and val when ``n_trainval >= 2`` and ``val_fraction > 0``).
        jpeg_quality: JPEG quality of the written images (OpenCV, 0-100).
    """

    seed: int = 0
    n_trainval: int = 200
    n_test: int = 100
    n_classes: int = 6
    image_width: int = 500
    image_height: int = 375
    size_jitter: float = 0.1
    portrait_fraction: float = 0.1
    min_objects: int = 1
    max_objects: int = 6
    min_object_size: int = 20
    max_object_size: int = 300
    tiny_fraction: float = 0.05
    truncation_fraction: float = 0.15
    min_visible: float = 0.25
    difficult_min_visible: float = 0.45
    difficult_min_size: float = 16.0
    val_fraction: float = 0.25
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        def check_int(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"demo data: {name} must be an integer, got {value!r}")
            if value < low or (high is not None and value > high):
                bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise ConfigError(f"demo data: {name} must be {bounds}, got {value}")

        def check_float(name: str, low: float, high: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"demo data: {name} must be a number, got {value!r}")
            if not (low <= float(value) <= high):
                raise ConfigError(f"demo data: {name} must be in [{low}, {high}], got {value}")

        check_int("seed", 0)
        check_int("n_trainval", 1)
        check_int("n_test", 0)
        check_int("n_classes", 1, len(SHAPE_CLASSES))
        check_int("image_width", 64, 4096)
        check_int("image_height", 64, 4096)
        check_float("size_jitter", 0.0, 0.5)
        check_float("portrait_fraction", 0.0, 1.0)
        check_int("min_objects", 1, 50)
        check_int("max_objects", 1, 50)
        check_int("min_object_size", 8, 4096)
        check_int("max_object_size", 8, 4096)
        check_float("tiny_fraction", 0.0, 1.0)
        check_float("truncation_fraction", 0.0, 1.0)
        check_float("min_visible", 0.05, 1.0)
        check_float("difficult_min_visible", 0.0, 1.0)
        check_float("difficult_min_size", 0.0, 4096.0)
        check_float("val_fraction", 0.0, 0.9)
        check_int("jpeg_quality", 0, 100)
        if self.min_objects > self.max_objects:
            raise ConfigError(
                f"demo data: min_objects ({self.min_objects}) must not exceed "
                f"max_objects ({self.max_objects})"
            )
        if self.min_object_size > self.max_object_size:
            raise ConfigError(
                f"demo data: min_object_size ({self.min_object_size}) must not exceed "
                f"max_object_size ({self.max_object_size})"
            )

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of this dataset, in label order."""
        return SHAPE_CLASSES[: self.n_classes]

    @property
    def n_images(self) -> int:
        """Total number of images (trainval + test)."""
        return self.n_trainval + self.n_test

    def to_dict(self) -> dict[str, int | float]:
        """Plain dict of the fields (for artifact records and the marker file)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> DemoDataConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"demo data: unknown parameters {unknown}; known: {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]
