"""Import proposals computed elsewhere, and check them against a dataset.

Two formats are read:

**R-CNN's ``selective_search_data`` .mat files** (e.g. ``voc_2007_test.mat``, MATLAB v5 as
written by R-CNN's ``selective_search_boxes.m``): a cell array ``images`` of image ids and a
cell array ``boxes`` of the same length, each cell a ``[N, 4]`` double array in rank order with
columns ``y1 x1 y2 x2`` in **1-based inclusive** pixels. They become sppdet boxes with
``x1 = x1_1based - 1``, ``y1 = y1_1based - 1``, ``x2 = x2_1based``, ``y2 = y2_1based``
(the same conversion as :func:`sppdet.ops.boxes.voc_to_xyxy`). MATLAB v7.3 files (HDF5) are not
read; re-save them with ``save(..., '-v7')``.

**sppdet's plain .npz format** (written by :func:`save_npz`, easy to write from any tool)::

    numpy.savez(path, **{image_id: boxes, image_id + "__scores": scores, ...})

- one array per image, named by the image id: ``[N, 4]`` float, **0-based continuous**
  ``x1, y1, x2, y2`` in original image pixels (pixel ``i`` covers ``[i, i + 1)``; a VOC box
  ``xmin..xmax`` is ``xmin - 1 .. xmax``), rows in rank order (best first);
- optionally ``<image_id>__scores``: ``[N]`` float scores of those rows (higher is better);
- an image with no proposals has an empty ``[0, 4]`` array.

Validation (:func:`validate_proposals`) against the dataset given as ``{image_id: (height,
width)}`` reports: ids not in the dataset (dropped), dataset images without proposals or with
an empty set (given an empty set), malformed arrays (emptied), non-finite coordinates
(dropped), boxes reaching outside the image (clipped) and boxes that are empty after clipping
(dropped), and a score array of the wrong length (scores dropped). It returns the cleaned
proposals and a list of problem strings, or raises :class:`~sppdet.errors.DataError` listing
them in strict mode.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sppdet.ops.boxes import clip_boxes
from sppdet.errors import DataError
from sppdet.proposals.common import ProposalResult

SCORES_SUFFIX = "__scores"
# Problems listed in a strict-mode error message before "and N more".
_MAX_LISTED_PROBLEMS = 20


def load_rcnn_mat(path: str | os.PathLike) -> dict[str, ProposalResult]:
    """Read R-CNN's ``selective_search_data`` .mat file (see the module docstring).

    Args:
        path: the .mat file.

    Returns:
        image id -> :class:`ProposalResult` with float32 ``[N, 4]`` 0-based continuous xyxy
        boxes in the file's order and ``scores=None``. Ids stored as text are kept as they
        are; ids stored as numbers become ``str(int(value))`` (leading zeros cannot be
        recovered). Not validated: pass the result to :func:`validate_proposals`.

    Raises:
        DataError: missing or unreadable file, missing ``images``/``boxes`` variables, lengths
            that differ, a malformed box array, or an id listed twice.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"proposal file not found: {path}")
    try:
        contents = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=False)
    except NotImplementedError as error:  # scipy's answer to MATLAB v7.3 (HDF5) files
        raise DataError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which is not read; re-save it in MATLAB "
            f"with save(..., '-v7') or convert it to sppdet's .npz format"
        ) from error
    except (ValueError, TypeError, OSError) as error:
        raise DataError(f"cannot read {path} as a MATLAB .mat file: {error}") from error
    for name in ("images", "boxes"):
        if name not in contents:
            found = sorted(k for k in contents if not k.startswith("__"))
            raise DataError(
                f"{path} has no variable {name!r}; R-CNN proposal files hold 'images' (ids) "
                f"and 'boxes' (one [N, 4] y1 x1 y2 x2 array per image); found {found}"
            )
    image_ids = [_mat_string(cell, path) for cell in np.asarray(contents["images"]).ravel()]
    box_cells = list(np.asarray(contents["boxes"], dtype=object).ravel())
    if len(image_ids) != len(box_cells):
        raise DataError(
            f"{path}: {len(image_ids)} image ids but {len(box_cells)} box arrays; they must "
            "pair up one to one"
        )
    proposals: dict[str, ProposalResult] = {}
    for image_id, cell in zip(image_ids, box_cells):
        if image_id in proposals:
            raise DataError(f"{path}: image id {image_id!r} is listed twice")
        raw = np.asarray(cell, dtype=np.float64)
        if raw.size == 0:
            proposals[image_id] = ProposalResult(np.zeros((0, 4), np.float32), None)
            continue
        if raw.ndim != 2 or raw.shape[1] != 4:
            raise DataError(
                f"{path}: boxes of image {image_id!r} have shape {raw.shape}; expected [N, 4] "
                "(y1 x1 y2 x2, 1-based)"
            )
        # R-CNN's column order is y1 x1 y2 x2, 1-based inclusive pixels.
        boxes = np.stack([raw[:, 1] - 1.0, raw[:, 0] - 1.0, raw[:, 3], raw[:, 2]], axis=1).astype(
            np.float32
        )
        proposals[image_id] = ProposalResult(boxes, None)
    return proposals


def load_npz(path: str | os.PathLike) -> dict[str, ProposalResult]:
    """Read proposals in sppdet's plain .npz format (see the module docstring).

    Returns:
        image id -> :class:`ProposalResult` (float32 boxes, float32 scores or ``None``), not
        validated: pass the result to :func:`validate_proposals`.

    Raises:
        DataError: missing or unreadable file, or a ``__scores`` array without its boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"proposal file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path} as a numpy .npz archive: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path} holds a single numpy array, not an .npz archive with one array per image id"
        )
    try:
        arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read the arrays of {path}: {error}") from error
    finally:
        archive.close()
    proposals: dict[str, ProposalResult] = {}
    for name, array in arrays.items():
        if name.endswith(SCORES_SUFFIX):
            if name[: -len(SCORES_SUFFIX)] not in arrays:
                raise DataError(
                    f"{path}: {name!r} has no box array {name[: -len(SCORES_SUFFIX)]!r}"
                )
            continue
        scores = arrays.get(name + SCORES_SUFFIX)
        proposals[name] = ProposalResult(
            np.asarray(array, dtype=np.float32) if array.size else np.zeros((0, 4), np.float32),
            None if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1),
        )
    return proposals


def save_npz(path: str | os.PathLike, proposals: Mapping[str, ProposalResult]) -> None:
    """Write proposals in sppdet's plain .npz format (uncompressed; see the module docstring).

    Raises:
        DataError: an image id ends with ``__scores`` (reserved for score arrays).
    """
    arrays: dict[str, np.ndarray] = {}
    for image_id, result in proposals.items():
        if image_id.endswith(SCORES_SUFFIX):
            raise DataError(f"image id {image_id!r} ends with the reserved {SCORES_SUFFIX!r}")
        arrays[image_id] = np.asarray(result.boxes, dtype=np.float32).reshape(-1, 4)
        if result.scores is not None:
            arrays[image_id + SCORES_SUFFIX] = np.asarray(result.scores, dtype=np.float32)
    np.savez(path, **arrays)


def validate_proposals(
    proposals: Mapping[str, ProposalResult | np.ndarray],
    image_sizes: Mapping[str, tuple[int, int]],
    *,
    strict: bool = False,
    source: str = "proposals",
) -> tuple[dict[str, ProposalResult], list[str]]:
    """Check imported proposals against a dataset and repair what can be repaired.

    Args:
        proposals: image id -> :class:`ProposalResult` or ``[N, 4]`` xyxy array.
        image_sizes: the dataset, image id -> ``(height, width)`` in pixels.
        strict: raise instead of repairing when there is any problem.
        source: name of the file (or other source) used in messages.

    Returns:
        ``(cleaned, problems)``: ``cleaned`` has exactly the dataset's ids (in its order), each
        with float32 ``[N, 4]`` boxes inside the image in the input's rank order and float32
        scores or ``None``; ``problems`` lists one human-readable string per problem found
        (empty when everything was fine).

    Raises:
        DataError: in strict mode, when ``problems`` is not empty (the message lists them).
    """
    problems: list[str] = []
    unknown = [image_id for image_id in proposals if image_id not in image_sizes]
    if unknown:
        problems.append(
            f"{source}: {len(unknown)} image id(s) not in the dataset, ignored: "
            f"{_sample(unknown)}"
        )
    missing = [image_id for image_id in image_sizes if image_id not in proposals]
    if missing:
        problems.append(
            f"{source}: {len(missing)} dataset image(s) have no proposals (given an empty "
            f"set): {_sample(missing)}"
        )

    cleaned: dict[str, ProposalResult] = {}
    empty = []
    for image_id, (height, width) in image_sizes.items():
        if image_id not in proposals:
            cleaned[image_id] = ProposalResult(np.zeros((0, 4), np.float32), None)
            continue
        entry = proposals[image_id]
        boxes = entry.boxes if isinstance(entry, ProposalResult) else entry
        scores = entry.scores if isinstance(entry, ProposalResult) else None
        result = _validate_one(image_id, boxes, scores, height, width, source, problems)
        if len(result) == 0:
            empty.append(image_id)
        cleaned[image_id] = result
    if empty:
        problems.append(
            f"{source}: {len(empty)} image(s) have an empty proposal set: {_sample(empty)}"
        )
    if strict and problems:
        listed = problems[:_MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        raise DataError(
            f"{len(problems)} problem(s) in {source}:\n  - "
            + "\n  - ".join(listed)
            + (f"\n  ... and {more} more" if more else "")
        )
    return cleaned, problems


def _validate_one(
    image_id: str,
    boxes: np.ndarray,
    scores: np.ndarray | None,
    height: int,
    width: int,
    source: str,
    problems: list[str],
) -> ProposalResult:
    where = f"{source}: image {image_id!r}"
    raw = np.asarray(boxes)
    if raw.size == 0:
        return ProposalResult(np.zeros((0, 4), np.float32), None)
    if raw.ndim != 2 or raw.shape[1] != 4 or not np.issubdtype(raw.dtype, np.number):
        problems.append(
            f"{where}: boxes must be a numeric [N, 4] array, got {raw.dtype} {raw.shape}; "
            "the image gets an empty set"
        )
        return ProposalResult(np.zeros((0, 4), np.float32), None)
    boxes = raw.astype(np.float64)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != boxes.shape[0]:
            problems.append(
                f"{where}: {scores.shape[0]} scores for {boxes.shape[0]} boxes; scores dropped"
            )
            scores = None
    keep = np.isfinite(boxes).all(axis=1)
    if not keep.all():
        problems.append(f"{where}: {int((~keep).sum())} box(es) with NaN/inf coordinates dropped")
    outside = keep & (
        (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
    )
    if outside.any():
        problems.append(
            f"{where}: {int(outside.sum())} box(es) reach outside the {width}x{height} image; "
            "clipped"
        )
    boxes = clip_boxes(boxes, width, height)
    degenerate = keep & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if degenerate.any():
        problems.append(
            f"{where}: {int(degenerate.sum())} degenerate box(es) (x2 <= x1 or y2 <= y1, after "
            "clipping) dropped"
        )
    keep &= ~degenerate
    return ProposalResult(
        np.ascontiguousarray(boxes[keep], dtype=np.float32),
        None if scores is None else scores[keep].astype(np.float32),
    )


def _mat_string(cell: object, path: Path) -> str:
    """An image id from a MATLAB cell: a char array, a 1x1 cell of one, or a number."""
    value = cell
    while isinstance(value, np.ndarray):
        if value.dtype.kind in "US":
            return "".join(str(v) for v in value.ravel()).strip()
        if value.size != 1:
            raise DataError(f"{path}: an entry of 'images' is not an image id: {value!r}")
        value = value.ravel()[0]
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value.strip()
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    raise DataError(f"{path}: an entry of 'images' is not an image id: {value!r}")


def _sample(ids: list[str], count: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:count])
    return shown + (f", ... ({len(ids) - count} more)" if len(ids) > count else "")
