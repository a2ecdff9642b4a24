"""Images of a split that lenient reading left out: said in every stage's summary and log.

A split file may list an image whose annotation is missing or malformed, or whose image file
is missing or unreadable; lenient reading (the default) leaves it out, and the stages that
read the split say so (how many, which, why) instead of silently working on fewer images.
"""

from __future__ import annotations

import logging

from sppdet.data.voc import VOCDataset

#: Images listed one per line in a summary; the rest are counted (the log lists them all).
SHOWN = 10


def left_out_lines(left_out: dict[str, str], split: str) -> list[str]:
    """Summary lines (indented) for the images left out of ``split``; none when none was."""
    if not left_out:
        return []
    lines = [f"  left out: {len(left_out)} image(s) of split '{split}' that cannot be read "
             "(`sppdet inspect-data` lists every problem):"]
    lines += [f"    {image_id}: {why}" for image_id, why in list(left_out.items())[:SHOWN]]
    if len(left_out) > SHOWN:
        lines.append(f"    ... and {len(left_out) - SHOWN} more (listed in the log file)")
    return lines


def log_left_out(log: logging.Logger, data: VOCDataset) -> dict[str, str]:
    """Log a warning per image left out of ``data``'s split; return them (id -> why)."""
    left_out = data.left_out
    for image_id, why in left_out.items():
        log.warning("left out of split '%s': %s: %s", data.split, image_id, why)
    return left_out


def left_out_warnings(data: VOCDataset) -> list[str]:
    """One warning per image left out of ``data``'s split (for stages that list warnings)."""
    return [f"left out of split '{data.split}' (cannot be read): {image_id}: {why}"
            for image_id, why in data.left_out.items()]
