"""The detections artifact: what ``detect`` and ``combine`` write and ``combine``/``eval`` read.

A per-image HDF5 written through :class:`sppdet.io.item_store.ItemStore`, one item per image:

- ``boxes`` float32 ``[K, 4]`` (0-based continuous xyxy), ``scores`` float32 ``[K]``, ``labels``
  int64 ``[K]``: the final detections, after per-class NMS and the per-image cap;
- ``candidates/boxes``, ``candidates/scores``, ``candidates/labels`` (same dtypes, ``[N]``):
  every scored window above the score threshold, after box regression and before NMS; model
  combination (paper section 4.4) pools these;
- ``softmax_candidates/boxes``, ``.../scores``, ``.../labels``: only in an artifact made
  with ``softmax_candidates`` (``tune-detect``'s selection model, whose record params then
  hold ``softmax_candidates: {score_threshold: [per class]}``): every class's candidates
  scored by the fc8 softmax as log-odds, from the same detection pass;
- attributes ``width`` and ``height`` of the image in pixels.

The record's params (built by :func:`detections_params`) hold ``model`` (name), ``classes``
(names in label order), ``data`` (``stages.common.dataset_params`` of the split: dataset path,
split, classes, image count, fingerprint) and ``nms`` (``iou_threshold``, ``score_threshold``,
``max_per_image``; ``method`` and ``sigma`` for Soft-NMS; ``per_class``, a list in label order
of ``{method, iou_threshold, sigma}``, when the classes were suppressed with settings of their
own; ``per_class_score_threshold``, a list in label order, when the classes had thresholds of
their own: mixed scoring, see :mod:`sppdet.detector.model`). A ``detect`` record also holds
``scorer`` and, with mixed scoring only, ``class_scorers`` (per class in label order, ``svm``
or ``softmax``: log-odds of the probability); without it every class has ``scorer``'s
scores. Its stage is ``"detect"``, or ``"combine"`` for combined models. Records written before
Soft-NMS or per-class settings existed hold only the first three keys and still load.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.io.item_store import ItemReader, ItemStore
from sppdet.io.records import Record
from sppdet.detector.detections import ImageDetections
from sppdet.errors import ArtifactError, ConfigError, DataError, Remedy
from sppdet.ops.nms import (DEFAULT_IOU_THRESHOLD, DEFAULT_MAX_PER_IMAGE, DEFAULT_SCORE_THRESHOLD,
                            DEFAULT_SOFT_NMS_SIGMA, NMS_METHODS)
from sppdet.io.closing import Closing

DETECTIONS_STAGES = ("detect", "combine")
CANDIDATES_GROUP = "candidates"
SOFTMAX_CANDIDATES_GROUP = "softmax_candidates"


@dataclass(frozen=True)
class ClassNMS:
    """How one class's overlapping windows are suppressed.

    Attributes:
        method: ``hard`` NMS, or Soft-NMS ``linear`` / ``gaussian``.
        iou_threshold: hard NMS suppresses above it; linear Soft-NMS decays above it (N_t).
        sigma: the Gaussian Soft-NMS width.
    """

    method: str = "hard"
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    sigma: float = DEFAULT_SOFT_NMS_SIGMA

    def __post_init__(self) -> None:
        if self.method not in NMS_METHODS:
            raise ConfigError(f"NMS method must be one of {NMS_METHODS}, got {self.method!r}")

    def describe(self) -> str:
        """``hard IoU 0.3``, ``linear N_t 0.5`` or ``gaussian sigma 0.5``."""
        if self.method == "hard":
            return f"hard IoU {self.iou_threshold:g}"
        if self.method == "linear":
            return f"linear N_t {self.iou_threshold:g}"
        return f"gaussian sigma {self.sigma:g}"

    def to_params(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, values: Mapping[str, Any]) -> ClassNMS:
        """Raises KeyError, TypeError or ValueError (ConfigError) on a malformed mapping."""
        return cls(method=str(values["method"]), iou_threshold=float(values["iou_threshold"]),
                   sigma=float(values["sigma"]))


@dataclass(frozen=True)
class NMSSettings:
    """Test-time NMS settings (REFERENCE.md section 8; defaults are the released code's).

    Attributes:
        iou_threshold: suppress a window whose IoU with a kept window of its class is greater.
        score_threshold: keep windows scoring above it; ``None`` keeps all.
        max_per_image: at most this many detections per image; ``None`` for no limit.
        method: ``hard`` NMS, or Soft-NMS ``linear`` / ``gaussian``
            (:func:`sppdet.ops.nms.class_nms`).
        sigma: the Gaussian Soft-NMS width.
        per_class: one :class:`ClassNMS` per class in label order, replacing ``method``,
            ``iou_threshold`` and ``sigma``; ``None``: those three for every class.
        class_score_thresholds: per class in label order, replacing ``score_threshold``
            (mixed scoring: each class's threshold in its own units); ``None``:
            ``score_threshold`` for every class.
    """

    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD
    max_per_image: int | None = DEFAULT_MAX_PER_IMAGE
    method: str = "hard"
    sigma: float = DEFAULT_SOFT_NMS_SIGMA
    per_class: tuple[ClassNMS, ...] | None = None
    class_score_thresholds: tuple[float | None, ...] | None = None

    def score_threshold_for(self, label: int) -> float | None:
        """The score threshold of class ``label``."""
        if self.class_score_thresholds is None:
            return self.score_threshold
        return self.class_score_thresholds[label]

    def for_class(self, label: int) -> ClassNMS:
        """The suppression of class ``label``."""
        if self.per_class is None:
            return ClassNMS(self.method, self.iou_threshold, self.sigma)
        return self.per_class[label]

    def describe(self, classes: Sequence[str] | None = None) -> str:
        """``hard IoU 0.3`` or, per class, ``a: hard IoU 0.3; b: gaussian sigma 0.5``."""
        if self.per_class is None:
            return self.for_class(0).describe()
        names = list(classes) if classes is not None else [str(i) for i in
                                                           range(len(self.per_class))]
        return "; ".join(f"{n}: {c.describe()}" for n, c in zip(names, self.per_class))

    def to_params(self) -> dict[str, Any]:
        params = asdict(self)
        del params["per_class"], params["class_score_thresholds"]
        if self.method == "hard":  # records of hard NMS stay as they were: still up to date
            del params["method"], params["sigma"]
        if self.per_class is not None:
            params["per_class"] = [c.to_params() for c in self.per_class]
        if self.class_score_thresholds is not None:  # absent otherwise: old records stay current
            params["per_class_score_threshold"] = list(self.class_score_thresholds)
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any], source: Path) -> NMSSettings:
        """Read ``params["nms"]`` (or the same keys at the top level) of a detections record."""
        nms = params.get("nms", params)
        try:
            score = nms["score_threshold"]
            cap = nms["max_per_image"]
            return cls(iou_threshold=float(nms["iou_threshold"]),
                       score_threshold=None if score is None else float(score),
                       max_per_image=None if cap is None else int(cap),
                       method=str(nms.get("method", "hard")),
                       sigma=float(nms.get("sigma", DEFAULT_SOFT_NMS_SIGMA)),
                       per_class=None if nms.get("per_class") is None else tuple(
                           ClassNMS.from_params(c) for c in nms["per_class"]),
                       class_score_thresholds=None if nms.get("per_class_score_threshold")
                       is None else tuple(None if t is None else float(t)
                                          for t in nms["per_class_score_threshold"]))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ArtifactError(f"{source}: the record has no usable NMS settings ({exc})",
                                remedy=Remedy.rerun("detect", force=True)) from exc


def detections_params(*, model: str, data: Mapping[str, Any], classes: Sequence[str],
                      nms: NMSSettings, **extra: Any) -> dict[str, Any]:
    """The params of a detections record (``extra``: anything else the stage records)."""
    return {"model": model, "classes": list(classes), "data": dict(data),
            "nms": nms.to_params(), **extra}


def detection_item(final: ImageDetections, candidates: ImageDetections, width: int,
                   height: int, softmax_candidates: ImageDetections | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, attrs)`` of one image for :meth:`ItemStore.write`, in the artifact's layout
    (``softmax_candidates``: the optional group of that name)."""
    for other in (candidates, softmax_candidates):
        if other is not None and other.image_id != final.image_id:
            raise DataError(f"candidates of image {other.image_id} given with the detections "
                            f"of image {final.image_id}")
    arrays = {
        "boxes": final.boxes, "scores": final.scores, "labels": final.labels,
        f"{CANDIDATES_GROUP}/boxes": candidates.boxes,
        f"{CANDIDATES_GROUP}/scores": candidates.scores,
        f"{CANDIDATES_GROUP}/labels": candidates.labels,
    }
    if softmax_candidates is not None:
        arrays.update({f"{SOFTMAX_CANDIDATES_GROUP}/{key}": getattr(softmax_candidates, key)
                       for key in ("boxes", "scores", "labels")})
    return arrays, {"width": int(width), "height": int(height)}


@dataclass
class DetectionsItem:
    """One image of a detections artifact (for :func:`write_detections_artifact`)."""

    final: ImageDetections
    candidates: ImageDetections
    width: int
    height: int


def write_detections_artifact(path: str | os.PathLike[str], record: Record,
                              items: Iterable[DetectionsItem], *, force: bool = False) -> Path:
    """Write a whole detections artifact at once (every image in ``items``, in that order).

    Raises:
        ConfigError: the record is not a detections record, or an image id repeats.
    """
    if record.stage not in DETECTIONS_STAGES:
        raise ConfigError(f"a detections artifact is made by {DETECTIONS_STAGES}, "
                          f"not {record.stage!r}")
    ids: list[str] = []
    with ItemStore(path, record, force=force) as store:
        for item in items:
            if item.final.image_id in ids:
                raise ConfigError(f"image {item.final.image_id!r} given twice")
            ids.append(item.final.image_id)
            store.write(item.final.image_id,
                        *detection_item(item.final, item.candidates, item.width, item.height))
        final = store.finalize(ids)
    if final is None:  # cannot happen: every id was written above
        raise ArtifactError(f"{path}: some images were not written")
    return final


class DetectionsReader(Closing):
    """Open a finished detections artifact; images are read on demand.

    Attributes:
        path, record: the artifact and its record.
        model: the model name in the record.
        classes: class names in label order.
        data: the dataset identity the detections were made on (``dataset_params``).
        nms: the NMS settings that made the final detections.

    Raises:
        ArtifactMissingError / ArtifactError: not a finished artifact, or not one of detections.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._reader = ItemReader(self.path, made_by="detect")
        try:
            self.record = self._reader.record
            if self.record.stage not in DETECTIONS_STAGES:
                raise ArtifactError(f"{self.path} was made by `sppdet {self.record.stage}`, not "
                                    "by detect or combine: it holds no detections")
            params = self.record.params
            try:
                self.model = str(params["model"])
                self.classes: tuple[str, ...] = tuple(str(c) for c in params["classes"])
                self.data: dict[str, Any] = dict(params["data"])
            except (KeyError, TypeError) as exc:
                raise ArtifactError(f"{self.path}: the record lacks {exc} (model, classes and "
                                    "data are needed)",
                                    remedy=Remedy.rerun("detect", force=True)) from exc
            self.nms = NMSSettings.from_params(params, self.path)
            if self.nms.per_class is not None and len(self.nms.per_class) != len(self.classes):
                raise ArtifactError(f"{self.path}: the record's NMS settings name "
                                    f"{len(self.nms.per_class)} classes, its class list "
                                    f"{len(self.classes)}",
                                    remedy=Remedy.rerun("detect", force=True))
        except BaseException:
            self._reader.close()
            raise

    def close(self) -> None:
        self._reader.close()

    @property
    def failures(self) -> dict[str, str]:
        """Images that failed in ``detect`` (left out of the artifact) -> reason."""
        return dict(self._reader.failures)

    def image_ids(self) -> list[str]:
        return self._reader.ids()

    def _read(self, image_id: str, prefix: str) -> ImageDetections:
        group = self._reader.group(image_id)
        try:
            boxes, scores, labels = (group[f"{prefix}{key}"][()]
                                     for key in ("boxes", "scores", "labels"))
        except KeyError:
            what = prefix.rstrip("/").replace("_", " ") if prefix else "detections"
            raise ArtifactError(f"{self.path}: image {image_id!r} has no {what} "
                                f"({prefix}boxes/scores/labels)") from None
        try:
            detections = ImageDetections(image_id, boxes, scores, labels)
        except DataError as exc:
            raise ArtifactError(f"{self.path}: {exc.message}", remedy=exc.remedy) from exc
        if len(detections) and detections.labels.max() >= len(self.classes):
            raise ArtifactError(f"{self.path}: image {image_id!r} has label "
                                f"{int(detections.labels.max())}, but the record lists "
                                f"{len(self.classes)} classes")
        return detections

    def detections(self, image_id: str) -> ImageDetections:
        """The final detections of one image (after NMS and the per-image cap)."""
        return self._read(image_id, "")

    def candidates(self, image_id: str) -> ImageDetections:
        """Every scored window of one image above the score threshold, before NMS."""
        return self._read(image_id, f"{CANDIDATES_GROUP}/")

    def softmax_candidates(self, image_id: str) -> ImageDetections:
        """Every class's windows of one image scored by the softmax as log-odds, above
        :attr:`softmax_score_thresholds` (an artifact made with ``softmax_candidates``)."""
        return self._read(image_id, f"{SOFTMAX_CANDIDATES_GROUP}/")

    @property
    def class_scorers(self) -> tuple[str, ...] | None:
        """Per class, in label order, what scored its detections: ``svm``, ``softmax``
        (probabilities) or, with mixed scoring, ``softmax`` for log-odds beside ``svm``
        classes (record ``class_scorers``); records before mixed scoring: ``scorer`` for
        every class. ``None``: the record names no scorer (e.g. ``combine``'s)."""
        params = self.record.params
        if params.get("class_scorers") is not None:
            return tuple(str(s) for s in params["class_scorers"])
        if params.get("scorer") is None:
            return None
        return (str(params["scorer"]),) * len(self.classes)

    @property
    def softmax_score_thresholds(self) -> tuple[float | None, ...] | None:
        """Per class, the softmax candidates' threshold (log-odds); ``None``: the artifact
        holds no softmax candidates."""
        extra = self.record.params.get(SOFTMAX_CANDIDATES_GROUP)
        if extra is None:
            return None
        try:
            return tuple(None if t is None else float(t) for t in extra["score_threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{self.path}: the record's softmax candidates have no usable "
                                f"score thresholds ({exc})",
                                remedy=Remedy.rerun("detect", force=True)) from exc

    def count(self, image_id: str, *, candidates: bool = False) -> int:
        """How many detections (or candidates) an image has, without reading them."""
        key = f"{CANDIDATES_GROUP}/scores" if candidates else "scores"
        try:
            return int(self._reader.group(image_id)[key].shape[0])
        except KeyError:
            raise ArtifactError(f"{self.path}: image {image_id!r} has no {key}") from None

    def size(self, image_id: str) -> tuple[int, int]:
        """``(width, height)`` of the image in pixels."""
        attrs = self._reader.group(image_id).attrs
        try:
            return int(attrs["width"]), int(attrs["height"])
        except KeyError:
            raise ArtifactError(f"{self.path}: image {image_id!r} has no width/height") from None

    def __iter__(self) -> Iterator[ImageDetections]:
        """Final detections of every image, in artifact order."""
        return (self.detections(i) for i in self.image_ids())


@dataclass
class DetectionsArtifact:
    """A detections artifact loaded into memory (final detections only)."""

    path: Path
    record: Record
    model: str
    classes: tuple[str, ...]
    data: dict[str, Any]
    nms: NMSSettings
    detections: list[ImageDetections]
    sizes: dict[str, tuple[int, int]]
    failures: dict[str, str]


def read_detections_artifact(path: str | os.PathLike[str]) -> DetectionsArtifact:
    """Load every image's final detections and size (see :class:`DetectionsReader`)."""
    with DetectionsReader(path) as reader:
        ids = reader.image_ids()
        return DetectionsArtifact(
            path=reader.path, record=reader.record, model=reader.model,
            classes=reader.classes, data=reader.data, nms=reader.nms,
            detections=[reader.detections(i) for i in ids],
            sizes={i: reader.size(i) for i in ids}, failures=reader.failures)


def data_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str | None:
    """What differs between two dataset identities (``dataset_params``), or ``None``.

    The split name, the class list and the fingerprint (image ids, annotation bytes, image
    sizes) must be equal. The folder path alone may differ: a copy of the same data at another
    place has the same fingerprint.
    """
    if expected.get("split") != found.get("split"):
        return f"split {found.get('split')!r} instead of {expected.get('split')!r}"
    if list(expected.get("classes", [])) != list(found.get("classes", [])):
        return f"classes {list(found.get('classes', []))} instead of " \
               f"{list(expected.get('classes', []))}"
    if expected.get("fingerprint") != found.get("fingerprint"):
        if expected.get("dataset") != found.get("dataset"):
            return f"dataset {found.get('dataset')} instead of {expected.get('dataset')}"
        return (f"the same folder, but its annotations, image list or image files changed "
                f"(fingerprint {found.get('fingerprint')} instead of "
                f"{expected.get('fingerprint')})")
    return None
