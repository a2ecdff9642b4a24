"""Shared fixtures: small VOC-layout datasets written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_voc_xml(path: Path, filename: str, width: int | None, height: int | None,
                  objects: list[dict]) -> None:
    """Write a VOC annotation file; each object: name, box (xmin, ymin, xmax, ymax as given),
    optional difficult/truncated. Values are written verbatim so tests can write floats."""
    parts = ["<annotation>", "<folder>VOC</folder>", f"<filename>{filename}</filename>"]
    if width is not None:
        parts.append(f"<size><width>{width}</width><height>{height}</height>"
                     "<depth>3</depth></size>")
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["box"]
        parts.append(
            f"<object><name>{obj['name']}</name><pose>Unspecified</pose>"
            f"<truncated>{obj.get('truncated', 0)}</truncated>"
            f"<difficult>{obj.get('difficult', 0)}</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
            f"<ymax>{ymax}</ymax></bndbox></object>")
    parts.append("</annotation>")
    path.write_text("\n".join(parts))


def make_voc_dataset(root: Path, images: dict[str, list[dict]], split: str = "trainval",
                     size: tuple[int, int] = (64, 48)) -> Path:
    """A tiny VOC-layout dataset: one random JPEG per id and its XML."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    for image_id, objects in images.items():
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg")
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", width,
                      height, objects)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(images) + "\n")
    return root


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """Three clean images, two classes, one difficult object."""
    return make_voc_dataset(tmp_path / "tiny", {
        "img1": [{"name": "circle", "box": (1, 1, 10, 20)}],
        "img2": [{"name": "square", "box": (5, 6, 64, 48), "truncated": 1},
                 {"name": "circle", "box": (20, 20, 30, 30), "difficult": 1}],
        "img3": [],
    })
