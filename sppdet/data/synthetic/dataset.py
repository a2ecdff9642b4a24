"""Writing the synthetic dataset in the VOC2007 layout, and recognising a finished one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2

from sppdet.data.synthetic.config import SPLITS, DemoDataConfig
from sppdet.data.synthetic.scene import render_demo_image
from sppdet.data.synthetic.splits import split_image_ids
from sppdet.data.voc_xml import VocXmlObject, voc_xml_string
from sppdet.errors import ConfigError, DataError

#: Name of the file written last into a finished demo dataset; its presence marks one.
MARKER_FILENAME = "sppdet-demo.json"
#: Format tag stored in the marker file.
MARKER_FORMAT = "sppdet-demo-data"
#: Bumped whenever the same config would render different images or annotations.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class DemoDataSummary:
    """What :func:`make_demo_data` wrote.

    Attributes:
        out_dir: the dataset folder.
        classes: class names in label order.
        images: split name (train, val, trainval, test) -> number of images.
        objects: split name -> class name -> number of objects (difficult ones included).
        difficult: split name -> number of difficult objects.
        truncated: split name -> number of truncated objects.
    """

    out_dir: Path
    classes: tuple[str, ...]
    images: Mapping[str, int]
    objects: Mapping[str, Mapping[str, int]]
    difficult: Mapping[str, int]
    truncated: Mapping[str, int]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (the path as a string)."""
        return {
            "out_dir": str(self.out_dir),
            "classes": list(self.classes),
            "images": dict(self.images),
            "objects": {split: dict(counts) for split, counts in self.objects.items()},
            "difficult": dict(self.difficult),
            "truncated": dict(self.truncated),
        }

    def format_table(self) -> str:
        """A small plain-text table: one row per split, one column per class."""
        header = ["split", "images", *self.classes, "difficult", "truncated"]
        rows = [header]
        for split in SPLITS:
            rows.append(
                [
                    split,
                    str(self.images[split]),
                    *(str(self.objects[split][name]) for name in self.classes),
                    str(self.difficult[split]),
                    str(self.truncated[split]),
                ]
            )
        widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
        return "\n".join(
            "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows
        )


def is_demo_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a finished dataset written by :func:`make_demo_data`.

    A finished one has the marker file (written last) with the demo-data format tag; a folder
    without it is unfinished or something else.
    """
    marker = Path(path) / MARKER_FILENAME
    if not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == MARKER_FORMAT


def read_demo_config(path: str | os.PathLike[str]) -> DemoDataConfig:
    """The :class:`DemoDataConfig` a finished demo dataset was made with.

    Raises:
        DataError: ``path`` is not a finished demo dataset, or its marker is unreadable.
    """
    if not is_demo_dataset(path):
        raise DataError(
            f"{path} is not a finished sppdet demo dataset (no valid {MARKER_FILENAME}); "
            "make one with make-demo-data"
        )
    record = json.loads((Path(path) / MARKER_FILENAME).read_text(encoding="utf-8"))
    try:
        return DemoDataConfig.from_dict(record["config"])
    except (KeyError, TypeError, ConfigError) as error:
        raise DataError(f"{Path(path) / MARKER_FILENAME}: unreadable config ({error})") from error


def _write_images(
    folder: str, indices: Sequence[int], config: DemoDataConfig
) -> list[tuple[str, list[tuple[str, bool, bool]]]]:
    """Render and write images ``indices`` into ``folder`` (a joblib worker).

    Returns:
        per image: (id, [(class name, difficult, truncated), ...]).
    """
    root = Path(folder)
    records = []
    encode_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(config.jpeg_quality)]
    for index in indices:
        demo = render_demo_image(index, config)
        ok, encoded = cv2.imencode(".jpg", demo.image_bgr, encode_params)
        if not ok:
            raise DataError(f"demo data: OpenCV could not encode image {demo.image_id} as JPEG")
        (root / "JPEGImages" / f"{demo.image_id}.jpg").write_bytes(encoded.tobytes())
        xml = voc_xml_string(
            f"{demo.image_id}.jpg",
            demo.width,
            demo.height,
            [
                VocXmlObject(
                    name=obj.name,
                    bbox=obj.bbox,
                    truncated=obj.truncated,
                    difficult=obj.difficult,
                )
                for obj in demo.objects
            ],
            folder="sppdet-demo",
        )
        (root / "Annotations" / f"{demo.image_id}.xml").write_bytes(xml.encode("utf-8"))
        records.append(
            (demo.image_id, [(obj.name, obj.difficult, obj.truncated) for obj in demo.objects])
        )
    return records


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))


def _readme_text(config: DemoDataConfig) -> str:
    return (
        "sppdet demo dataset (synthetic, PASCAL VOC 2007 layout)\n"
        "\n"
        "Made by sppdet make-demo-data; regenerate it with the parameters in "
        f"{MARKER_FILENAME}.\n"
        f"Classes ({config.n_classes}, also in classes.txt): {', '.join(config.classes)}.\n"
        "Annotations/<id>.xml: VOC XML; boxes are the visible pixels of each object, 1-based\n"
        "inclusive; truncated = cut by the image border; difficult = tiny or mostly hidden.\n"
        "ImageSets/Main/{train,val,trainval,test}.txt and <class>_<split>.txt as in VOC\n"
        "(1: the class is in the image, 0: only as difficult, -1: absent).\n"
    )


def make_demo_data(
    out_dir: str | os.PathLike[str],
    config: DemoDataConfig = DemoDataConfig(),
    *,
    overwrite: bool = False,
    jobs: int = 1,
) -> DemoDataSummary:
    """Write the synthetic dataset ``config`` describes into ``out_dir`` (VOC layout).

    Layout::

        out_dir/Annotations/<id>.xml
        out_dir/JPEGImages/<id>.jpg
        out_dir/ImageSets/Main/{train,val,trainval,test}.txt
        out_dir/ImageSets/Main/<class>_{train,val,trainval,test}.txt
        out_dir/classes.txt, out_dir/README.txt
        out_dir/sppdet-demo.json   (format tag, generator version, config; written last)

    The dataset is written into a temporary sibling folder ``.<name>.tmp-*`` and renamed to
    ``out_dir`` only when complete, so ``out_dir`` never holds a half-written dataset (a crash
    leaves only the temporary folder).

    Args:
        out_dir: the dataset folder. It may be absent, empty, or a previous demo dataset (which
            is replaced); anything else is refused unless ``overwrite``.
        config: dataset parameters.
        overwrite: replace ``out_dir`` whatever it holds.
        jobs: worker processes for rendering (joblib); the output does not depend on it.

    Returns:
        Counts per split and class.

    Raises:
        DataError: ``out_dir`` holds something that is not a demo dataset and ``overwrite`` is
            false, or writing fails.
        ConfigError: ``jobs`` < 1.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"demo data: jobs must be an integer >= 1, got {jobs!r}")
    out = Path(out_dir).absolute()
    if out.exists() or out.is_symlink():
        replaceable = out.is_dir() and (not any(out.iterdir()) or is_demo_dataset(out))
        if not replaceable and not overwrite:
            kind = "a non-empty folder" if out.is_dir() else "a file"
            raise DataError(
                f"{out} exists and is {kind} that is not an sppdet demo dataset (no "
                f"{MARKER_FILENAME}); choose another folder or pass overwrite=True to replace it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (tmp / sub).mkdir(parents=True)
        indices = list(range(config.n_images))
        if jobs == 1 or len(indices) < 2:
            records = _write_images(str(tmp), indices, config)
        else:
            from joblib import Parallel, delayed

            chunks = [indices[k::jobs] for k in range(jobs) if indices[k::jobs]]
            parts = Parallel(n_jobs=len(chunks))(
                delayed(_write_images)(str(tmp), chunk, config) for chunk in chunks
            )
            records = sorted((rec for part in parts for rec in part), key=lambda rec: rec[0])
        by_id = dict(records)

        splits = split_image_ids(config)
        classes = config.classes
        main = tmp / "ImageSets" / "Main"
        images_count: dict[str, int] = {}
        objects_count: dict[str, dict[str, int]] = {}
        difficult_count: dict[str, int] = {}
        truncated_count: dict[str, int] = {}
        for split in SPLITS:
            ids = splits[split]
            _write_lines(main / f"{split}.txt", ids)
            for name in classes:
                lines = []
                for image in ids:
                    flags = [difficult for cls, difficult, _ in by_id[image] if cls == name]
                    # VOC devkit convention: 1 present, 0 only difficult instances, -1 absent.
                    label = -1 if not flags else (0 if all(flags) else 1)
                    lines.append(f"{image} {label:2d}")
                _write_lines(main / f"{name}_{split}.txt", lines)
            objs = [obj for image in ids for obj in by_id[image]]
            images_count[split] = len(ids)
            objects_count[split] = {name: sum(o[0] == name for o in objs) for name in classes}
            difficult_count[split] = sum(bool(o[1]) for o in objs)
            truncated_count[split] = sum(bool(o[2]) for o in objs)

        _write_lines(tmp / "classes.txt", list(classes))
        (tmp / "README.txt").write_bytes(_readme_text(config).encode("utf-8"))
        marker = {
            "format": MARKER_FORMAT,
            "generator_version": GENERATOR_VERSION,
            "config": config.to_dict(),
            "classes": list(classes),
            "images": images_count,
            "objects": objects_count,
            "difficult": difficult_count,
            "truncated": truncated_count,
        }
        (tmp / MARKER_FILENAME).write_bytes(
            (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode("utf-8")
        )

        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return DemoDataSummary(
        out_dir=out,
        classes=classes,
        images=images_count,
        objects=objects_count,
        difficult=difficult_count,
        truncated=truncated_count,
    )
