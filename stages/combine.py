"""Stage ``combine``: model combination (paper section 4.4, REFERENCE.md 1.9).

For every image, the scored windows (``candidates``) of all input models are pooled and
per-class NMS runs on the union, so a more confident window of one model suppresses the
overlapping windows of the others. The output is a detections artifact like ``detect``'s
(``detections/<name>/<dataset-tag>/<split>.h5``), whose candidates are the pooled windows, so
a combination can itself be combined or evaluated.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sppdet.io.records import Record, check_inputs_current, input_ref, read_record
from sppdet.detector.combine import combine_image_detections
from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import (
    DetectionsReader,
    NMSSettings,
    data_mismatch,
    detection_item,
    detections_params,
)
from sppdet.errors import YOUR_CHOICE, ArtifactError, ConfigError, DataError, Remedy
from sppdet.progress import get_logger, progress

from .common import format_seconds
from .layout import detections_path
from .runner import StageOutput

log = get_logger("combine")
STAGE = "combine"
STAGE_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass
class CombineSummary:
    """What a combine run did (printed at the end)."""

    path: Path
    name: str
    models: list[str]
    images: int
    nms: NMSSettings
    detections_per_image: float = 0.0
    detections_max: int = 0
    candidates_per_image: float = 0.0
    seconds: float = 0.0
    resumed: int = 0
    up_to_date: bool = False
    inputs: list[Path] = field(default_factory=list)

    def to_text(self) -> str:
        if self.up_to_date:
            return f"Combined detections are up to date: {self.path}"
        settings = (f"IoU > {self.nms.iou_threshold:g} suppresses, score > "
                    f"{self.nms.score_threshold}, at most {self.nms.max_per_image} per image")
        lines = [f"Combined {len(self.models)} models ({', '.join(self.models)}) -> "
                 f"{self.name}: {self.images} images -> {self.path}",
                 f"  NMS on the pooled windows: {settings}",
                 f"  detections per image: mean {self.detections_per_image:.1f}, max "
                 f"{self.detections_max}; pooled windows per image: mean "
                 f"{self.candidates_per_image:.1f}",
                 f"  time: {format_seconds(self.seconds)}"
                 + (f" ({self.resumed} images already done)" if self.resumed else "")]
        return "\n".join(lines)


def check_name(name: str) -> str:
    """A model name is one folder name: letters, digits and ``._+-``, not starting with a dot."""
    if not _NAME.fullmatch(name or ""):
        raise ConfigError(f"model name {name!r}: use letters, digits and . _ + - (it becomes a "
                          "folder name), starting with a letter or digit")
    return name


def output_path(work_dir: Path, name: str, inputs: Sequence[str | Path]) -> Path:
    """``<work>/detections/<name>/<dataset-tag>/<split>.h5`` for the first input's data."""
    if not inputs:
        raise ConfigError("combine needs at least two detections artifacts, got none")
    record = read_record(inputs[0], made_by="detect")
    data = record.params.get("data")
    if not isinstance(data, dict) or "dataset" not in data or "split" not in data:
        raise ArtifactError(f"{inputs[0]}: the record does not say which dataset and split the "
                            "detections were made on; is it a detections artifact?")
    return detections_path(work_dir, check_name(name), data["dataset"], data["split"])


def _common_setting(readers: Sequence[DetectionsReader], key: str, override: object
                    ) -> object:
    if override is not None:
        return override
    values = {getattr(r.nms, key) for r in readers}
    if len(values) > 1:
        listed = ", ".join(f"{r.path}: {getattr(r.nms, key)}" for r in readers)
        raise ConfigError(f"the inputs were made with different {key} ({listed})",
                          remedy=Remedy.rerun(verb="choose one", **{key: YOUR_CHOICE}))
    return values.pop()


def _check_same_data(readers: Sequence[DetectionsReader]) -> list[str]:
    """The image ids of the first input; DataError unless every input was made on its data."""
    first = readers[0]
    ids = first.image_ids()
    for other in readers[1:]:
        mismatch = data_mismatch(first.data, other.data)
        if mismatch is None and other.classes != first.classes:
            mismatch = f"classes {list(other.classes)} instead of {list(first.classes)}"
        if mismatch is not None:
            raise DataError(f"cannot combine {other.path} with {first.path}: it holds "
                            f"detections made on {mismatch}; combine detections of one "
                            "dataset split and class list")
        other_ids = set(other.image_ids())
        if other_ids != set(ids):
            missing = sorted(set(ids) - other_ids)
            extra = sorted(other_ids - set(ids))
            raise DataError(f"cannot combine {other.path} with {first.path}: they cover other "
                            f"images (missing {len(missing)}, e.g. {missing[:5]}; extra "
                            f"{len(extra)}, e.g. {extra[:5]}); images that failed in detect "
                            "must be redone in both")
    return ids


def run(inputs: Sequence[str | Path], out: str | Path, *, name: str,
        iou_threshold: float | None = None, score_threshold: float | None = None,
        max_per_image: int | None = None, no_limit: bool = False,
        force: bool = False) -> CombineSummary:
    """Combine the detections of several models on one split into a new detections artifact.

    Args:
        inputs: two or more detections artifacts (``detect`` or ``combine``), in priority
            order: on equal scores the earlier model's window wins.
        out: the output artifact.
        name: the combined model's name (recorded; names its folder).
        iou_threshold, score_threshold, max_per_image: NMS settings for the pooled windows;
            ``None`` takes the inputs' common setting (the inputs must then agree).
        no_limit: no per-image cap (overrides ``max_per_image``).
        force: rebuild even if up to date; combine inputs whose own inputs changed since.

    Raises:
        ConfigError: fewer than two inputs, one given twice, a bad name, the output among the
            inputs, or inputs with different NMS settings and no override.
        DataError: inputs made on different datasets, splits, class lists or images (the
            message names both files).
        ArtifactError: an input is missing, unfinished or stale.
    """
    check_name(name)
    paths = [Path(p) for p in inputs]
    if len(paths) < 2:
        raise ConfigError(f"combine needs at least two detections artifacts, got {len(paths)}")
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("the same detections artifact is given twice: "
                          + ", ".join(str(p) for p in paths))
    out = Path(out)
    if out.resolve() in resolved:
        raise ConfigError(f"the output {out} is one of the inputs; choose another output name")
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(DetectionsReader(p)) for p in paths]
        if not force:
            for reader in readers:
                check_inputs_current(reader.record, reader.path)
        ids = _check_same_data(readers)
        nms = NMSSettings(
            iou_threshold=float(_common_setting(readers, "iou_threshold", iou_threshold)),
            score_threshold=_common_setting(readers, "score_threshold", score_threshold),
            max_per_image=None if no_limit else _common_setting(
                readers, "max_per_image", max_per_image))
        models = [r.model for r in readers]
        first = readers[0]
        record = Record(
            STAGE,
            detections_params(model=name, data=first.data, classes=first.classes, nms=nms,
                              combined_models=models),
            inputs={f"detections_{i + 1}": input_ref(p, made_by="detect")
                    for i, p in enumerate(paths)},
            stage_version=STAGE_VERSION)
        summary = CombineSummary(path=out, name=name, models=models, images=len(ids), nms=nms,
                                 inputs=paths)
        output = StageOutput(out, record, force=force)
        if output.is_current():
            return replace(summary, up_to_date=True)
        with output.logging():
            log.debug("combine %s -> %s with %s", [str(p) for p in paths], out, nms)
            _combine_all(readers, ids, output, nms, summary)
        return summary


def _combine_all(readers: Sequence[DetectionsReader], ids: list[str], output: StageOutput,
                 nms: NMSSettings, summary: CombineSummary) -> None:
    start = time.perf_counter()
    with output.item_store() as store:
        pending = store.pending(ids)
        summary.resumed = len(ids) - len(pending)
        for image_id in progress(pending, total=len(pending), desc="combine"):
            sizes = {r.size(image_id) for r in readers}
            if len(sizes) > 1:
                raise DataError(f"image {image_id}: the inputs give different image sizes "
                                f"{sorted(sizes)}; were they made on the same dataset?")
            windows = [r.candidates(image_id) for r in readers]
            final = combine_image_detections(windows, iou_threshold=nms.iou_threshold,
                                             score_threshold=nms.score_threshold,
                                             max_per_image=nms.max_per_image)
            pooled = ImageDetections.concatenate(image_id, windows)
            if nms.score_threshold is not None:
                pooled = pooled.select(pooled.scores > nms.score_threshold)
            width, height = sizes.pop()
            store.write(image_id, *detection_item(final, pooled, width, height))
        store.finalize(ids)
    summary.seconds = time.perf_counter() - start
    _fill_counts(summary, output.path)


def _fill_counts(summary: CombineSummary, out: Path) -> None:
    with DetectionsReader(out) as reader:
        ids = reader.image_ids()
        final = [reader.count(i) for i in ids]
        pooled = [reader.count(i, candidates=True) for i in ids]
    if ids:
        summary.detections_per_image = statistics.fmean(final)
        summary.detections_max = max(final)
        summary.candidates_per_image = statistics.fmean(pooled)
