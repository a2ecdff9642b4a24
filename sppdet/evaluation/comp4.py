"""VOC result files (``comp4_det_<split>_<class>.txt``): write them and read them back.

One line per detection, ``<image_id> <score> <xmin> <ymin> <xmax> <ymax>``, with VOC's 1-based
pixel coordinates, which is what the official devkit's ``VOCevaldet`` reads. The conversion
from sppdet's 0-based continuous boxes is :func:`sppdet.ops.boxes.xyxy_to_voc` (``xmin = x1 +
1``, ``xmax = x2``, in float64); :class:`~sppdet.evaluation.voc_ap.ClassDetections` applies the
same conversion to a detections artifact, so its evaluation sees the numbers its comp4 files
hold. Files are read back into the devkit's coordinates, unchanged.

Numbers are written as the shortest decimal string that reads back to the same value
(``numpy.format_float_positional(..., unique=True)``; scores in their own dtype, float32 for
sppdet's detections, coordinates in float64 after the +1). Reading a file that sppdet wrote
therefore gives back exactly the same float32 scores and boxes, so the AP computed from the
files equals the AP computed from the detections in memory. (Fixed decimals such as ``%.3f``
would round scores into ties that were not there and move boxes across the 0.5 overlap.)
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sppdet.io.atomic import write_text_atomic
from sppdet.ops.boxes import xyxy_to_voc
from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError
from sppdet.evaluation.voc_ap import ClassDetections

LINE_FORMAT = "<image_id> <score> <xmin> <ymin> <xmax> <ymax>"


def comp4_filename(split: str, class_name: str) -> str:
    """``comp4_det_<split>_<class>.txt``, the devkit's name for a detection result file."""
    return f"comp4_det_{split}_{class_name}.txt"


def _format_numbers(values: np.ndarray) -> list[str]:
    """Shortest positional decimal strings ``[D]`` that read back to ``values`` in their dtype."""
    if values.dtype != np.float64:
        return [np.format_float_positional(v, unique=True, trim="-") for v in values]
    # For float64, repr is the same shortest round-trip string and several times faster; it
    # switches to exponent notation below 1e-4 and from 1e16, where the positional form is used.
    texts = [t[:-2] if t.endswith(".0") else t for t in map(repr, values.tolist())]
    for i, text in enumerate(texts):
        if "e" in text:
            texts[i] = np.format_float_positional(values[i], unique=True, trim="-")
    return texts


def format_comp4_lines(
    image_ids: Sequence[str], scores: np.ndarray, boxes_xyxy: np.ndarray
) -> list[str]:
    """Lines (without newline) for detections of one class.

    Args:
        image_ids: ``[D]`` image ids (no whitespace).
        scores: ``[D]`` scores; written in their own float dtype's shortest exact form.
        boxes_xyxy: ``[D, 4]`` 0-based continuous boxes; written 1-based (``xyxy_to_voc``).
    """
    scores = np.asarray(scores).reshape(-1)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    voc_boxes = xyxy_to_voc(boxes_xyxy)  # float64; exact for float32 boxes (x + 1)
    image_ids = [str(i) for i in image_ids]
    if not (len(image_ids) == scores.shape[0] == voc_boxes.shape[0]):
        raise DataError(
            "image ids, scores and boxes must have the same length, got "
            f"{len(image_ids)}, {scores.shape[0]}, {voc_boxes.shape[0]}"
        )
    for image_id in set(image_ids):
        if not image_id or any(ch.isspace() for ch in image_id):
            raise DataError(f"image id {image_id!r} cannot be written to a comp4 file")
    columns = [_format_numbers(scores)] + [_format_numbers(voc_boxes[:, k]) for k in range(4)]
    return list(map(" ".join, zip(image_ids, *columns)))


def write_comp4_file(path: str | os.PathLike, detections: ClassDetections) -> Path:
    """Write one class's detections to ``path`` (atomically); an empty class gives an empty file."""
    path = Path(path)
    lines = format_comp4_lines(list(detections.image_ids), detections.scores, detections.boxes)
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return path


def write_comp4_files(
    out_dir: str | os.PathLike,
    split: str,
    class_names: Sequence[str],
    detections: Sequence[ImageDetections],
) -> list[Path]:
    """Write ``comp4_det_<split>_<class>.txt`` for every class (one file per class, empty if
    the class has no detections), in image order then box order.

    Args:
        out_dir: folder, created if missing.
        split: the image set name, e.g. ``"test"``.
        class_names: class names in label order.
        detections: per-image detections; float32 scores are written in float32's shortest
            exact form.

    Returns:
        the paths written, in class order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    counts = np.array([len(d) for d in detections], dtype=np.int64)
    ids = np.repeat(np.array([d.image_id for d in detections], dtype=object), counts)
    if detections:
        labels = np.concatenate([d.labels for d in detections])
        scores = np.concatenate([d.scores for d in detections])
        boxes = np.concatenate([d.boxes for d in detections]).reshape(-1, 4)
    else:
        labels, scores, boxes = np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4))
    if labels.size and labels.max() >= len(class_names):
        bad = int(np.flatnonzero(labels >= len(class_names))[0])
        raise DataError(
            f"image {ids[bad]}: detection label {int(labels[bad])} is out of range for "
            f"{len(class_names)} classes {list(class_names)}"
        )
    for c, name in enumerate(class_names):
        mask = labels == c
        lines = format_comp4_lines(list(ids[mask]), scores[mask], boxes[mask])
        path = out / comp4_filename(split, name)
        write_text_atomic(path, "".join(line + "\n" for line in lines))
        paths.append(path)
    return paths


def read_comp4_file(path: str | os.PathLike) -> ClassDetections:
    """Read one comp4 file (from sppdet or any other tool).

    Blank lines are skipped (the devkit's ``textscan`` skips them too). The coordinates are
    kept exactly as read (float64, 1-based: ``ClassDetections.boxes_voc``, on which the
    overlaps are computed, as the devkit computes them); ``boxes`` is their 0-based form
    (``xmin - 1``). Scores are float64.

    Raises:
        DataError: a line without exactly 6 fields, or a field that is not a finite number;
            the message names the file and the 1-based line number.
    """
    return _parse_comp4_file(Path(path))[0]


def _parse_comp4_file(path: Path) -> tuple[ClassDetections, np.ndarray]:
    """:func:`read_comp4_file` plus the 1-based line number ``[D]`` of each detection."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read comp4 file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"comp4 file {path} is not UTF-8 text: {exc}") from exc
    image_ids: list[str] = []
    values: list[tuple[float, ...]] = []
    line_numbers: list[int] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataError(
                f"{path}:{line_number}: expected 6 fields '{LINE_FORMAT}', "
                f"got {len(fields)}: {line.strip()!r}"
            )
        try:
            numbers = tuple(map(float, fields[1:]))
        except ValueError:
            raise DataError(
                f"{path}:{line_number}: score and coordinates must be numbers "
                f"('{LINE_FORMAT}'), got {line.strip()!r}"
            ) from None
        image_ids.append(fields[0])
        values.append(numbers)
        line_numbers.append(line_number)
    table = np.array(values, dtype=np.float64).reshape(-1, 5)
    not_finite = ~np.isfinite(table).all(axis=1)
    if not_finite.any():
        line_number = line_numbers[int(np.flatnonzero(not_finite)[0])]
        raise DataError(
            f"{path}:{line_number}: score and coordinates must be finite, "
            f"got {text.splitlines()[line_number - 1].strip()!r}"
        )
    detections = ClassDetections.from_voc(
        np.array(image_ids, dtype=object), table[:, 0], table[:, 1:5]
    )
    return detections, np.array(line_numbers, dtype=np.int64)


@dataclass
class Comp4Results:
    """What :func:`read_comp4_dir` found.

    Attributes:
        detections: class name -> :class:`ClassDetections` (classes whose file is missing
            are absent when ``missing_files="empty"``).
        paths: class name -> file read.
        missing_classes: classes without a file (only with ``missing_files="empty"``).
        unknown_image_ids: class name -> sorted unknown image ids that were dropped (only
            with ``unknown_images="drop"``).
        n_dropped: class name -> number of detection lines dropped for unknown ids.
    """

    detections: dict[str, ClassDetections]
    paths: dict[str, Path]
    missing_classes: list[str] = field(default_factory=list)
    unknown_image_ids: dict[str, list[str]] = field(default_factory=dict)
    n_dropped: dict[str, int] = field(default_factory=dict)


def read_comp4_dir(
    folder: str | os.PathLike,
    split: str,
    class_names: Sequence[str],
    *,
    known_image_ids: Collection[str] | None = None,
    unknown_images: str = "error",
    missing_files: str = "error",
) -> Comp4Results:
    """Read ``comp4_det_<split>_<class>.txt`` for each class from ``folder``.

    Args:
        folder: where the files are.
        split: the image set name in the file names.
        class_names: the classes to read.
        known_image_ids: the split's image ids; when given, lines on other images are
            reported (the devkit stops with "unrecognized image").
        unknown_images: ``"error"`` (default): DataError naming the file, the first such line
            and a few ids; ``"drop"``: skip those lines and list them in the result.
        missing_files: ``"error"`` (default): DataError naming the missing files;
            ``"empty"``: treat a missing class file as no detections and list the class (as
            the devkit evaluates class by class). When no class has a file at all, either
            mode raises DataError naming the split of the files that are there.
    """
    if unknown_images not in ("error", "drop"):
        raise ConfigError(f"unknown_images must be 'error' or 'drop', got {unknown_images!r}")
    if missing_files not in ("error", "empty"):
        raise ConfigError(f"missing_files must be 'error' or 'empty', got {missing_files!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"comp4 folder {folder} does not exist or is not a folder")
    paths = {name: folder / comp4_filename(split, name) for name in class_names}
    missing = [name for name, p in paths.items() if not p.is_file()]
    if class_names and len(missing) == len(paths):
        found = sorted(p.name for p in folder.glob("comp4_det_*.txt"))
        raise DataError(
            f"no comp4 file for split {split!r} in {folder} (expected names like "
            f"{paths[class_names[0]].name}); "
            + (f"found {len(found)} other(s), e.g. {found[:3]}" if found else "it holds none")
        )
    if missing and missing_files == "error":
        raise DataError(
            f"missing comp4 files in {folder}: "
            + ", ".join(paths[n].name for n in missing)
            + " (expected one 'comp4_det_<split>_<class>.txt' per class)"
        )
    known = None if known_image_ids is None else set(known_image_ids)
    result = Comp4Results(detections={}, paths={}, missing_classes=missing)
    for name in class_names:
        if name in missing:
            continue
        detections, line_numbers = _parse_comp4_file(paths[name])
        result.paths[name] = paths[name]
        if known is not None and len(detections):
            is_known = np.array([i in known for i in detections.image_ids], dtype=bool)
            if not is_known.all():
                unknown = sorted({str(i) for i in detections.image_ids[~is_known]})
                if unknown_images == "error":
                    first_line = int(line_numbers[np.flatnonzero(~is_known)[0]])
                    raise DataError(
                        f"{paths[name]}:{first_line}: {int((~is_known).sum())} detection(s) on "
                        f"{len(unknown)} image id(s) not in split {split!r}, e.g. {unknown[:5]}; "
                        "evaluate against the split the detections were made on, or drop them"
                    )
                result.unknown_image_ids[name] = unknown
                result.n_dropped[name] = int((~is_known).sum())
                detections = ClassDetections(
                    detections.image_ids[is_known],
                    detections.scores[is_known],
                    detections.boxes[is_known],
                )
        result.detections[name] = detections
    return result
