"""Write PASCAL VOC annotation XML files, deterministically.

The output follows the layout of the VOC2007 annotation files (tab indentation, elements in the
devkit's order: ``folder``, ``filename``, ``size``, ``segmented``, then one ``object`` per box
with ``name``, ``pose``, ``truncated``, ``difficult``, ``bndbox``). The text is built from a
template, not by an XML library, so the same inputs always give byte-identical files (no
timestamps, no attribute-order or whitespace differences between library versions).

Coordinates are written exactly as given: VOC's 1-based inclusive pixel indices
(``xmin..xmax``); convert from sppdet's 0-based continuous boxes with
:func:`sppdet.ops.boxes.xyxy_to_voc` first. Integers are written as integers; floats (some real VOC
files have them) with Python's shortest round-trip ``repr``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from sppdet.errors import DataError

Number = int | float


@dataclass(frozen=True)
class VocXmlObject:
    """One ``<object>`` of a VOC annotation file.

    Attributes:
        name: class name, e.g. ``"dog"``.
        bbox: ``(xmin, ymin, xmax, ymax)`` in VOC 1-based inclusive pixel indices.
        truncated: the ``<truncated>`` flag; ``None`` leaves the element out (as in the VOC2012
            action-format files).
        difficult: the ``<difficult>`` flag; ``None`` leaves the element out.
        pose: the ``<pose>`` text; ``None`` leaves the element out.
    """

    name: str
    bbox: tuple[Number, Number, Number, Number]
    truncated: bool | None = False
    difficult: bool | None = False
    pose: str | None = "Unspecified"


def _format_number(value: Number, what: str) -> str:
    """Text of one coordinate: ``int`` as ``"12"``, ``float`` as its shortest repr."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{what} must be an int or a float, got {type(value).__name__} {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{what} must be finite, got {value!r}")
        return repr(value)
    return str(int(value))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def voc_xml_string(
    filename: str,
    width: int,
    height: int,
    objects: Sequence[VocXmlObject],
    *,
    depth: int = 3,
    folder: str = "VOC",
    segmented: bool = False,
) -> str:
    """Text of a VOC annotation file (newline-terminated, ``\\n`` line ends).

    Args:
        filename: image file name written in ``<filename>``, e.g. ``"000001.jpg"``.
        width: image width in pixels (``<size><width>``).
        height: image height in pixels.
        objects: the boxes, in the order they are written.
        depth: number of colour channels (``<size><depth>``).
        folder: the ``<folder>`` text.
        segmented: the ``<segmented>`` flag.

    Returns:
        The XML text. Coordinates are not checked against the image size, so tests can write
        deliberately broken files; names are XML-escaped.

    Raises:
        DataError: a size or coordinate that is not a number.
    """
    for what, value in (("width", width), ("height", height), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{filename}: {what} must be an int, got {value!r}")
    lines = [
        "<annotation>",
        f"\t<folder>{escape(folder)}</folder>",
        f"\t<filename>{escape(filename)}</filename>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        f"\t\t<depth>{depth}</depth>",
        "\t</size>",
        f"\t<segmented>{_flag(segmented)}</segmented>",
    ]
    for index, obj in enumerate(objects):
        if len(obj.bbox) != 4:
            raise DataError(
                f"{filename}: object {index} ({obj.name!r}) needs 4 coordinates "
                f"(xmin, ymin, xmax, ymax), got {obj.bbox!r}"
            )
        coords = [
            _format_number(value, f"{filename}: object {index} ({obj.name!r}) {key}")
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.bbox)
        ]
        lines.append("\t<object>")
        lines.append(f"\t\t<name>{escape(obj.name)}</name>")
        if obj.pose is not None:
            lines.append(f"\t\t<pose>{escape(obj.pose)}</pose>")
        if obj.truncated is not None:
            lines.append(f"\t\t<truncated>{_flag(obj.truncated)}</truncated>")
        if obj.difficult is not None:
            lines.append(f"\t\t<difficult>{_flag(obj.difficult)}</difficult>")
        lines.append("\t\t<bndbox>")
        for key, text in zip(("xmin", "ymin", "xmax", "ymax"), coords):
            lines.append(f"\t\t\t<{key}>{text}</{key}>")
        lines.append("\t\t</bndbox>")
        lines.append("\t</object>")
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write_voc_xml(
    path: str | os.PathLike[str],
    filename: str,
    width: int,
    height: int,
    objects: Sequence[VocXmlObject],
    *,
    depth: int = 3,
    folder: str = "VOC",
    segmented: bool = False,
) -> Path:
    """Write a VOC annotation file (UTF-8, ``\\n`` line ends); see :func:`voc_xml_string`.

    Args:
        path: the ``.xml`` file to write; its folder must exist.
        filename, width, height, objects, depth, folder, segmented: as in
            :func:`voc_xml_string`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    text = voc_xml_string(
        filename, width, height, objects, depth=depth, folder=folder, segmented=segmented
    )
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return path
