"""PASCAL VOC-layout datasets: ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

Reads VOC 2007 and 2012 and any dataset in the same layout with its own classes (BCCD has 3).
Annotation boxes are 1-based inclusive pixel indices in the XML; they are converted once, here,
with :func:`sppdet.ops.boxes.voc_to_xyxy` to sppdet's 0-based continuous ``[x1, y1, x2, y2]``.

Nothing is silently repaired. Every problem found while reading (a malformed XML, a missing
image, a box outside the image, an inverted box, an unknown class, a float coordinate...) is
kept as a :class:`DataProblem` naming the file; with ``strict=True`` any problem raises
:class:`~sppdet.errors.DataError` listing them all. In the default lenient mode:

- a box that sticks out of the image is clipped (problem kind ``box-clipped``);
- an inverted box is dropped (``box-degenerate``): one whose width or height under the devkit's
  "+1" convention, ``xmax - xmin + 1``, is not positive (for integer coordinates: ``xmin >
  xmax``). A single-pixel box (``xmin == xmax`` or ``ymin == ymax``) is one pixel wide, valid
  ground truth for the devkit (area 1); it is kept and reported (``box-one-pixel``,
  informational) because it is usually an annotation slip;
- an object of an unknown class, or without a usable ``bndbox``, is dropped;
- an image whose XML cannot be parsed, or whose image file is missing, is left out of the split;
- float coordinates are accepted as they are (``float-coordinate``, informational).

Evaluation reads a split as the devkit does, from ``Annotations/`` and the split file alone:
``require_images=False`` accepts a missing image (``image_path`` is then ``None``; the size
comes from the XML) and ``clip_boxes=False`` keeps every box exactly as written, even outside
the image. ``ImageAnnotation.boxes_voc`` always holds the XML's own coordinates, unclipped.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sppdet.ops.boxes import voc_to_xyxy, xyxy_to_voc
from sppdet.data.images import read_image
from sppdet.errors import DataError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")

# Problem kinds that drop data or make an image unusable; the others are informational.
SEVERE_KINDS = frozenset({
    "xml-malformed", "xml-missing", "image-missing", "box-degenerate", "class-unknown",
    "box-missing", "size-missing", "duplicate-id", "image-unreadable", "size-mismatch",
})
# Problem kinds that leave an image of the split out (lenient mode).
LEFT_OUT_KINDS = frozenset({"xml-missing", "xml-malformed", "image-missing", "size-missing"})


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong (or worth knowing) in a dataset.

    Attributes:
        kind: short machine-readable kind, e.g. ``"box-degenerate"``.
        image_id: the image concerned (``""`` for dataset-level problems).
        path: the file concerned.
        message: what is wrong and what was done about it.
    """

    kind: str
    image_id: str
    path: str
    message: str

    @property
    def severe(self) -> bool:
        return self.kind in SEVERE_KINDS

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class ImageAnnotation:
    """The ground truth of one image.

    Attributes:
        image_id: id as listed in the split file.
        image_path: the image file; ``None`` only for a dataset read with
            ``require_images=False`` whose image is absent.
        width, height: image size in pixels (from the XML ``size``, else from the image);
            ``None`` only when neither exists (``require_images=False``).
        boxes: float32 ``[N, 4]``, 0-based continuous ``x1, y1, x2, y2`` (clipped to the image
            unless the dataset was read with ``clip_boxes=False``).
        labels: int64 ``[N]``, index into the dataset's ``classes``.
        difficult: bool ``[N]``.
        truncated: bool ``[N]``.
        boxes_voc: float64 ``[N, 4]``, the same objects' ``xmin, ymin, xmax, ymax`` exactly as
            the XML gives them (1-based inclusive, never clipped): what the devkit evaluates
            against. Default: ``xyxy_to_voc(boxes)``.
    """

    image_id: str
    image_path: Path | None
    width: int | None
    height: int | None
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray
    boxes_voc: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.boxes_voc is None:
            object.__setattr__(self, "boxes_voc", xyxy_to_voc(self.boxes))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class _ParsedObject:
    name: str
    box_voc: tuple[float, float, float, float]
    difficult: bool
    truncated: bool


@dataclass
class _ParsedXml:
    width: int | None
    height: int | None
    filename: str | None
    objects: list[_ParsedObject] = field(default_factory=list)


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip()


def _flag(element: ET.Element, tag: str) -> bool:
    value = _text(element.find(tag))
    if value is None or value == "":
        return False
    try:
        return bool(int(float(value)))
    except ValueError:
        return value.lower() in ("true", "yes")


def parse_voc_xml(path: Path, image_id: str, problems: list[DataProblem]) -> _ParsedXml | None:
    """Parse one annotation file; append problems; ``None`` when it cannot be used at all."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        problems.append(DataProblem("xml-missing", image_id, str(path),
                                    "annotation file not found; image left out"))
        return None
    except (ET.ParseError, OSError) as exc:
        problems.append(DataProblem("xml-malformed", image_id, str(path),
                                    f"malformed XML ({exc}); image left out"))
        return None
    width = height = None
    size = root.find("size")
    if size is not None:
        try:
            width = int(float(_text(size.find("width")) or "0")) or None
            height = int(float(_text(size.find("height")) or "0")) or None
        except ValueError:
            problems.append(DataProblem("size-invalid", image_id, str(path),
                                        "<size> is not numeric; the image's own size is used"))
    parsed = _ParsedXml(width=width, height=height, filename=_text(root.find("filename")))
    for index, obj in enumerate(root.findall("object")):
        name = _text(obj.find("name"))
        bndbox = obj.find("bndbox")
        where = f"object {index} ({name})"
        if not name:
            problems.append(DataProblem("class-unknown", image_id, str(path),
                                        f"object {index} has no <name>; dropped"))
            continue
        if bndbox is None:
            problems.append(DataProblem("box-missing", image_id, str(path),
                                        f"{where} has no <bndbox>; dropped"))
            continue
        values = [_text(bndbox.find(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        try:
            coords = tuple(float(v) for v in values)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            problems.append(DataProblem("box-missing", image_id, str(path),
                                        f"{where} has a missing or non-numeric coordinate "
                                        f"{values}; dropped"))
            continue
        if any(not float(v).is_integer() for v in coords):
            problems.append(DataProblem("float-coordinate", image_id, str(path),
                                        f"{where} has non-integer coordinates {values}; kept as "
                                        "floats"))
        parsed.objects.append(_ParsedObject(
            name=name, box_voc=coords,  # type: ignore[arg-type]
            difficult=_flag(obj, "difficult"), truncated=_flag(obj, "truncated"),
        ))
    return parsed


def read_text_file(path: Path) -> str:
    """A UTF-8 text file of the dataset (split lists, ``classes.txt``).

    Raises:
        DataError: it is not UTF-8 (e.g. a Latin-1 image id); the message names the file, the
            line and the bytes.
    """
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start:exc.end + 3]
        raise DataError(f"{path}: line {line} is not UTF-8 text (bytes {bad!r}, e.g. a Latin-1 "
                        "name); save the file as UTF-8 and name the image files to match")\
            from None


def read_split_ids(root: Path, split: str) -> list[str]:
    """Image ids of ``ImageSets/Main/<split>.txt`` (first column; blank lines skipped).

    Raises:
        DataError: the split file is missing, not UTF-8, or lists no image.
    """
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt")
                           if "_" not in p.stem) if (root / "ImageSets" / "Main").is_dir() else []
        hint = f" Splits found: {', '.join(available)}." if available else ""
        raise DataError(f"{split_file}: split file not found.{hint}")
    ids = [line.split()[0] for line in read_text_file(split_file).splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{split_file}: the split '{split}' lists no image")
    return ids


def discover_classes(root: Path) -> tuple[str, ...]:
    """The class list of a dataset when none is given.

    Rules, in order: ``<root>/classes.txt`` (one name per line); the 20 VOC classes in the
    devkit's order when every object name in ``Annotations/`` is one of them; otherwise the
    sorted set of names found in ``Annotations/`` (so every split of a dataset gets the same
    list).
    """
    classes_file = root / "classes.txt"
    if classes_file.is_file():
        names = [ln.strip() for ln in read_text_file(classes_file).splitlines() if ln.strip()]
        if names:
            return tuple(names)
    found: set[str] = set()
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        try:
            for name in ET.parse(xml_path).getroot().iterfind("object/name"):
                if name.text and name.text.strip():
                    found.add(name.text.strip())
        except (ET.ParseError, OSError):
            continue  # reported when the split is read
    if found and found <= set(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(sorted(found))


class VOCDataset:
    """One split of a VOC-layout dataset, annotations parsed eagerly (images read on demand).

    Args:
        root: the dataset folder (holding ``Annotations/``, ``JPEGImages/``, ``ImageSets/``).
        split: split name, e.g. ``"trainval"`` or ``"test"``.
        classes: class names in label order; default :func:`discover_classes`.
        strict: raise :class:`DataError` on any severe problem instead of reporting it.
        require_images: ``True`` (default, every stage that reads pixels): an image whose file
            is missing is left out (``image-missing``). ``False`` (evaluation, as the devkit
            reads only ``Annotations/`` and ``ImageSets/``): the image is kept with
            ``image_path = None``; ``JPEGImages/`` may be absent altogether.
        clip_boxes: ``True`` (default): clip boxes to the image and drop those left empty.
            ``False``: keep every valid box as written (the devkit does not clip).

    Attributes:
        classes: tuple of class names; ``labels`` index into it.
        problems: every :class:`DataProblem` found while reading.
        image_ids: ids of the usable images, in split-file order.
    """

    def __init__(self, root: str | os.PathLike[str], split: str,
                 classes: Sequence[str] | None = None, *, strict: bool = False,
                 require_images: bool = True, clip_boxes: bool = True) -> None:
        self.root = Path(root)
        self.split = split
        self.require_images = require_images
        self.clip_boxes = clip_boxes
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        if not (self.root / "Annotations").is_dir():
            raise DataError(f"{self.root}: no Annotations/ folder; expected the VOC layout "
                            "Annotations/, JPEGImages/, ImageSets/Main/<split>.txt")
        self.classes: tuple[str, ...] = tuple(classes) if classes else discover_classes(self.root)
        if not self.classes:
            raise DataError(f"{self.root}: no object classes found in Annotations/ and no "
                            "classes.txt; pass the class list")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"class list has duplicates: {self.classes}")
        self.problems: list[DataProblem] = []
        self._annotations: dict[str, ImageAnnotation] = {}
        self._load(read_split_ids(self.root, split))
        if strict:
            self.raise_if_problems()

    @property
    def image_ids(self) -> list[str]:
        return list(self._annotations)

    def __len__(self) -> int:
        return len(self._annotations)

    def __iter__(self) -> Iterator[ImageAnnotation]:
        return iter(self._annotations.values())

    def __getitem__(self, image_id: str) -> ImageAnnotation:
        try:
            return self._annotations[image_id]
        except KeyError:
            raise DataError(f"image id {image_id!r} is not in split '{self.split}' of "
                            f"{self.root}") from None

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._annotations

    @property
    def images_present(self) -> bool:
        """Whether every image of the split has its file (always, with ``require_images``)."""
        return all(a.image_path is not None for a in self._annotations.values())

    def load_image(self, image_id: str) -> np.ndarray:
        """The image as RGB uint8 ``[H, W, 3]`` (see :func:`sppdet.data.images.read_image`).

        Raises:
            DataError: the image file is absent (a dataset read with ``require_images=False``).
        """
        path = self[image_id].image_path
        if path is None:
            raise DataError(f"image {image_id}: no image file in {self.root / 'JPEGImages'}")
        return read_image(path)

    def severe_problems(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severe]

    @property
    def left_out(self) -> dict[str, str]:
        """Image id -> why, for every image of the split file left out (lenient mode): no or a
        malformed annotation, no image file, no size known."""
        return {p.image_id: str(p) for p in self.problems if p.kind in LEFT_OUT_KINDS}

    def raise_if_problems(self) -> None:
        """Raise :class:`DataError` listing every severe problem (strict mode)."""
        severe = self.severe_problems()
        if severe:
            lines = "\n  ".join(str(p) for p in severe[:50])
            more = f"\n  ... and {len(severe) - 50} more" if len(severe) > 50 else ""
            raise DataError(f"{len(severe)} problem(s) in {self.root} split "
                            f"'{self.split}':\n  {lines}{more}")

    def _find_image(self, image_id: str, filename: str | None) -> Path | None:
        folder = self.root / "JPEGImages"
        if filename:
            candidate = folder / filename
            if candidate.is_file():
                return candidate
        for ext in IMAGE_EXTENSIONS:
            candidate = folder / f"{image_id}{ext}"
            if candidate.is_file():
                return candidate
        return None

    def _load(self, ids: list[str]) -> None:
        class_index = {name: i for i, name in enumerate(self.classes)}
        seen: set[str] = set()
        for image_id in ids:
            xml_path = self.root / "Annotations" / f"{image_id}.xml"
            if image_id in seen:
                self.problems.append(DataProblem("duplicate-id", image_id, str(xml_path),
                                                 f"image id {image_id} is listed twice in "
                                                 f"split '{self.split}'; kept once"))
                continue
            seen.add(image_id)
            parsed = parse_voc_xml(xml_path, image_id, self.problems)
            if parsed is None:
                continue
            image_path = self._find_image(image_id, parsed.filename)
            if image_path is None and self.require_images:
                self.problems.append(DataProblem(
                    "image-missing", image_id, str(self.root / "JPEGImages" / f"{image_id}.jpg"),
                    "image file not found; image left out"))
                continue
            width, height = parsed.width, parsed.height
            if (width is None or height is None) and image_path is None:
                # only without require_images: the devkit needs no image size, nor does AP
                self.problems.append(DataProblem("size-unknown", image_id, str(xml_path),
                                                 "no <size> in the XML and no image file; "
                                                 "boxes are not clipped"))
                width = height = None
            elif width is None or height is None:
                from sppdet.data.images import image_size

                try:
                    width, height = image_size(image_path)
                except DataError as exc:
                    self.problems.append(DataProblem("size-missing", image_id, str(xml_path),
                                                     f"no <size> and {exc}; image left out"))
                    continue
                self.problems.append(DataProblem("size-from-image", image_id, str(xml_path),
                                                 "no <size> in the XML; read it from the image"))
            self._annotations[image_id] = self._build(image_id, image_path, xml_path, width,
                                                      height, parsed, class_index)
        if not self._annotations:
            raise DataError(f"split '{self.split}' of {self.root} has no usable image:\n  "
                            + "\n  ".join(str(p) for p in self.problems[:20]))

    def _build(self, image_id: str, image_path: Path | None, xml_path: Path,
               width: int | None, height: int | None, parsed: _ParsedXml,
               class_index: dict[str, int]) -> ImageAnnotation:
        boxes, boxes_voc, labels, difficult, truncated = [], [], [], [], []
        for index, obj in enumerate(parsed.objects):
            where = f"object {index} ({obj.name}) {obj.box_voc}"
            if obj.name not in class_index:
                self.problems.append(DataProblem("class-unknown", image_id, str(xml_path),
                                                 f"{where}: unknown class '{obj.name}' (classes: "
                                                 f"{', '.join(self.classes)}); dropped"))
                continue
            xmin, ymin, xmax, ymax = obj.box_voc
            # The devkit's widths are xmax - xmin + 1 (VOCevaldet): xmin == xmax is one pixel
            # wide, valid ground truth; only a box with no positive width or height (for
            # integer coordinates, xmin > xmax: inverted) is invalid. (The devkit itself would
            # count an inverted box as a positive that nothing can match.)
            width_voc, height_voc = xmax - xmin + 1, ymax - ymin + 1
            if width_voc <= 0 or height_voc <= 0:
                self.problems.append(DataProblem(
                    "box-degenerate", image_id, str(xml_path),
                    f"{where}: inverted box (xmin > xmax or ymin > ymax); dropped"))
                continue
            if width_voc <= 1 or height_voc <= 1:
                self.problems.append(DataProblem(
                    "box-one-pixel", image_id, str(xml_path),
                    f"{where}: box is {width_voc:g}x{height_voc:g} pixels (xmin == xmax or "
                    "ymin == ymax); kept: valid ground truth under the devkit's +1 convention, "
                    "though often an annotation slip"))
            box = voc_to_xyxy(np.array(obj.box_voc))[0]
            clipped = box.copy()
            if self.clip_boxes and width is not None and height is not None:
                clipped[0::2] = np.clip(clipped[0::2], 0, width)
                clipped[1::2] = np.clip(clipped[1::2], 0, height)
                if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                    self.problems.append(DataProblem(
                        "box-degenerate", image_id, str(xml_path),
                        f"{where}: box lies outside the {width}x{height} image; dropped"))
                    continue
            if width is not None and height is not None and (
                    box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height):
                done = "clipped" if self.clip_boxes else "kept as written"
                self.problems.append(DataProblem(
                    "box-clipped" if self.clip_boxes else "box-outside", image_id, str(xml_path),
                    f"{where}: box extends outside the {width}x{height} image; {done}"))
            boxes.append(clipped)
            boxes_voc.append(obj.box_voc)
            labels.append(class_index[obj.name])
            difficult.append(obj.difficult)
            truncated.append(obj.truncated)
        return ImageAnnotation(
            image_id=image_id,
            image_path=image_path,
            width=None if width is None else int(width),
            height=None if height is None else int(height),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            difficult=np.asarray(difficult, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
            boxes_voc=np.asarray(boxes_voc, dtype=np.float64).reshape(-1, 4),
        )
