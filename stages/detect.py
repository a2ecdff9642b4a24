"""Stage ``detect``: score every proposal, regress boxes, suppress duplicates.

Per image: SPP features of all proposals at their best scale (from the feature cache, or
computed on the fly when the split has none), then the detector of
:mod:`sppdet.detector.model` (scores, box regression, per-class NMS). The artifact keeps, per
image, the final detections and every candidate window above the threshold (what ``combine``
pools), and the VOC result files ``comp4_det_<split>_<class>.txt`` are written beside it.

NMS: the settings given; else the model's ``test_settings.json`` (per-class NMS chosen on the
validation split by ``tune-detect``, :mod:`sppdet.detector.tuning`) when it belongs to the
model as loaded; else the paper's hard NMS at IoU 0.3
(:func:`sppdet.detector.tuning.resolve_nms`).

Scores: the SVMs', unless the test settings in use chose the fc8 softmax for some classes
(mixed scoring: those classes score as log-odds, :mod:`sppdet.detector.model`); ``scorer``
given explicitly scores every class so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppdet.features.fast_fc import (DEFAULT_SVD_ENERGY, FC_MODES,  # noqa: F401 (the CLI)
                                     fast_fc_head, resolve_fc_mode)
from sppdet.data.voc import VOCDataset
from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import (SOFTMAX_CANDIDATES_GROUP, DetectionsReader,
                                           NMSSettings, detection_item, detections_params)
from sppdet.detector.model import SCORERS  # noqa: F401  (re-exported: the CLI's choices)
from sppdet.detector.tuning import (TestSettings, at_operating_points, describe_scorers,
                                    planned_class_scorers, resolve_nms)
from sppdet.detector.model import (
    DetectModel,
    DetectTimes,
    build_model_backbone,
    class_score_thresholds,
    detect_windows,
    detect_windows_with_softmax,
    load_model,
    needs_svm,
)
from sppdet.devices import resolve_device
from sppdet.errors import ArtifactError, ArtifactMissingError, ConfigError, DataError
from sppdet.evaluation.comp4 import comp4_filename, write_comp4_files
from sppdet.features.cache import ComputedFeatures, FeatureCache
from sppdet.io.atomic import write_text_atomic
from sppdet.io.faults import fault_point
from sppdet.io.item_store import ItemReader, shard_items
from sppdet.io.locks import ArtifactLock
from sppdet.io.records import (PARTS_SUFFIX, Record, input_ref, read_record, record_path,
                               write_record)
from sppdet.parallel.executors import (Executor, forget_process_cache, local_executor,
                                       process_cache, seed_process_cache)
from sppdet.progress import get_logger, progress

from .common import dataset_params, engine_line, format_seconds
from .left_out import left_out_lines, log_left_out
from .params import DEFAULT_DRAW_THRESHOLDS
from .runner import StageOutput, item_summary_lines
from .training_inputs import backbone_name, check_made_on

log = get_logger("detect")
STAGE = "detect"
STAGE_VERSION = 1
#: fc layers detect scores windows with by default: int8 on the CPU, float32 on a GPU
#: (see sppdet.features.fast_fc.resolve_fc_mode).
DEFAULT_FC = "auto"


@dataclass
class DetectSummary:
    """What a detect run did (``scorer``: the scores in words, ``svm scores`` or, mixed,
    ``svm scores; RBC: softmax scores (log-odds)``)."""

    path: Path
    model: str
    scorer: str
    images: int
    detections: int = 0
    seconds: float = 0.0
    times_per_image: dict[str, float] = field(default_factory=dict)
    windows: int = 0
    distinct: int = 0
    features: str = ""
    fc: str = ""
    resumed: int = 0
    comp4_dir: Path | None = None
    comp4_rewritten: bool = False
    failures: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    split: str = ""
    up_to_date: bool = False
    finished: bool = True
    computed: int = 0
    engine: str = ""
    reruns: int = 0
    nms: str = ""

    def to_text(self) -> str:
        if self.up_to_date:
            lines = [f"Detections are up to date: {self.path}"]
            if self.nms:
                lines.append(f"  NMS: {self.nms}")
            if self.comp4_rewritten:
                lines.append(f"  VOC result files were missing or stale; written: "
                             f"{self.comp4_dir}")
            return "\n".join(lines + left_out_lines(self.left_out, self.split))
        lines = [f"Detections of model {self.model} ({self.scorer}) for {self.images} "
                 f"images -> {self.path}"]
        if self.finished:
            lines.append(f"  detections: {self.detections} "
                         f"({self.detections / max(self.images, 1):.1f} per image)")
        if self.times_per_image:
            parts = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in self.times_per_image.items()
                              if v > 0)
            lines.append(f"  time: {format_seconds(self.seconds)}; per image: {parts} "
                         f"(features: {self.features})")
        if self.windows:
            lines.append(f"  windows: {self.windows:,} scored, {self.distinct:,} distinct on the "
                         "feature maps (each pooled and scored once)")
        if self.fc:
            lines.append(f"  scored with {self.fc}")
        if self.nms:
            lines.append(f"  NMS: {self.nms}")
        if self.engine:
            lines.append(engine_line(self.engine, self.reruns))
        if self.comp4_dir is not None:
            lines.append(f"  VOC result files: {self.comp4_dir}")
        lines += left_out_lines(self.left_out, self.split)
        lines.extend(item_summary_lines(self.failures, self.finished))
        return "\n".join(lines)


def comp4_dir_of(out: Path) -> Path:
    """Where the VOC result files of the detections artifact ``out`` go."""
    return out.with_name(out.stem + ".comp4")


def _comp4_current(out: Path, comp4_dir: Path, split: str, classes: list[str]) -> bool:
    """True when ``comp4_dir`` holds every class's file, written from ``out`` as it is now."""
    try:
        made_from = read_record(comp4_dir).inputs.get("detections")
        current = read_record(out).digest
    except ArtifactError:
        return False
    return (made_from is not None and made_from.digest == current
            and all((comp4_dir / comp4_filename(split, c)).is_file() for c in classes))


def write_outputs(out: Path, split: str, classes: list[str]) -> Path:
    """Write the VOC result files of the detections artifact ``out`` (one per class) and a
    record naming the artifact they come from, so a rerun knows whether they are complete."""
    comp4_dir = comp4_dir_of(out)
    with ArtifactLock(comp4_dir, clean=True):
        with DetectionsReader(out) as reader:
            image_dets = [reader.detections(i) for i in reader.image_ids()]
        # no record while the files are rewritten: a crash leaves them marked incomplete
        record_path(comp4_dir).unlink(missing_ok=True)
        for stale in comp4_dir.glob(".*.tmp"):  # a killed writer's (only we write here)
            stale.unlink(missing_ok=True)
        write_comp4_files(comp4_dir, split, classes, image_dets)
        write_record(comp4_dir, Record("detect", {"comp4": split, "classes": classes},
                                       inputs={"detections": input_ref(out)}))
    return comp4_dir


def _load_detector(model_dir: Path, *, scorer: str | None, use_bbox_reg: bool,
                   fc_path: Path | None, score_threshold: float | None,
                   max_per_image: int | None, iou_threshold: float | None,
                   nms_method: str | None, nms_sigma: float | None,
                   use_test_settings: bool = True
                   ) -> tuple[DetectModel, NMSSettings, TestSettings | None, str,
                              tuple[str, ...] | None]:
    """The model (its SVMs loaded only when a class needs them) and what
    :func:`~sppdet.detector.tuning.resolve_nms` gives: ``(model, nms, settings, nms_text,
    class_scorers)``."""
    options = dict(iou_threshold=iou_threshold, nms_method=nms_method, nms_sigma=nms_sigma,
                   use_test_settings=use_test_settings)
    planned = planned_class_scorers(model_dir, scorer=scorer, **options)
    base = scorer or "svm"
    model = load_model(model_dir, scorer="svm" if needs_svm(base, planned) else "softmax",
                       use_bbox_reg=use_bbox_reg, fc_path=fc_path)
    nms, settings, nms_text, class_scorers = resolve_nms(
        model_dir, model, scorer=scorer, use_bbox_reg=use_bbox_reg,
        score_threshold=score_threshold, max_per_image=max_per_image, **options)
    if needs_svm(base, class_scorers) and model.svm is None:
        # the settings chose softmax for every class but are not used (stale): SVMs after all
        model = load_model(model_dir, scorer="svm", use_bbox_reg=use_bbox_reg,
                           fc_path=fc_path)
    return model, nms, settings, nms_text, class_scorers


def run(dataset: str | Path, split: str, out: Path, *, model_dir: Path, proposals: Path,
        features: Path | None = None, scorer: str | None = None, use_bbox_reg: bool = True,
        iou_threshold: float | None = None, score_threshold: float | None = None,
        max_per_image: int | None = 100, scales: tuple[int, ...] | None = None,
        device: str = "auto", classes: tuple[str, ...] | None = None,
        shard: tuple[int, int] | None = None, on_error: str = "fail", force: bool = False,
        write_comp4: bool = True, fc: str = DEFAULT_FC,
        svd_energy: float = DEFAULT_SVD_ENERGY, jobs: int = 1,
        executor: Executor | None = None,
        merge_gate: Callable[[], bool] | None = None, nms_method: str | None = None,
        nms_sigma: float | None = None, use_test_settings: bool = True,
        fc_path: Path | None = None, softmax_candidates: bool = False) -> DetectSummary:
    """Detect objects in every image of ``split`` and write the detections artifact ``out``.

    Args:
        dataset: VOC-layout dataset folder.
        split: split name.
        out: the detections artifact.
        model_dir: ``<work>/models/<name>`` holding fc.pt, svm.npz, bbox_reg.npz.
        proposals: the split's proposals artifact.
        features: the split's feature cache; ``None`` computes conv5 on the fly with the
            backbone the fc layers were trained on.
        scorer: ``None`` (default): the SVMs, with the fc8 softmax (as log-odds) for the
            classes whose test settings in use chose it; ``svm`` or ``softmax``: that scorer
            for every class (test settings with per-class scorers are then not used).
        use_bbox_reg: apply the box regressors.
        iou_threshold: per-class NMS threshold (suppress when IoU > it). This, ``nms_method``
            and ``nms_sigma`` left ``None``: the model's test settings, else the defaults
            (:func:`sppdet.detector.tuning.resolve_nms`).
        score_threshold: drop windows scoring at most this (default -1.5 for SVM scores,
            1e-3 for softmax probabilities, its log-odds -6.9 for softmax classes of mixed
            scoring); given, it applies to every class in that class's own units.
        max_per_image: cap on detections per image (None: no cap).
        scales: scales for on-the-fly conv5 (default: the fine-tuning's scales).
        device: ``auto``, ``cpu``, ``cuda[:N]``.
        shard: ``(i, n)`` to process one shard.
        on_error: ``fail`` or ``skip`` for per-image failures.
        force: rerun even if up to date.
        write_comp4: write ``comp4_det_<split>_<class>.txt`` beside the artifact (also when
            the artifact is up to date but they are missing or were made from another one).
        fc: ``auto`` (``int8`` on the CPU, ``float`` on a GPU), ``float`` (the trained fc
            layers), ``svd`` (truncated SVD of fc6/fc7 keeping ``svd_energy`` of the squared
            singular values) or ``int8`` (CPU), see :mod:`sppdet.features.fast_fc`.
        svd_energy: for ``fc="svd"``.
        jobs: worker processes (each loads the model once).
        executor: where the images are processed (e.g. a Dask cluster); default: ``jobs``.
        merge_gate: called once this process's images are committed; the parts are merged
            only if it returns True (torchrun: a barrier, then rank 0 merges).
        nms_method: ``hard`` (default), or Soft-NMS ``linear`` / ``gaussian``.
        nms_sigma: the Gaussian Soft-NMS width.
        use_test_settings: use the model's ``test_settings.json`` when no NMS setting is
            given.
        fc_path: the fc layers, when not ``model_dir / "fc.pt"`` (a selection model's).
        softmax_candidates: SVM scores for every class (no mixed scoring) only: also store
            every class's candidates scored by the softmax as log-odds, from the same pass of
            the fc layers (above the softmax default's log-odds, or ``score_threshold``),
            what ``tune-detect`` chooses each class's scorer with.

    Raises:
        ArtifactMissingError: the features file does not exist or is unfinished, or another
            input is missing.
        DataError: the proposals or features were made on another dataset or split.
    """
    if features is not None and not Path(features).exists():
        parts = Path(features).with_name(Path(features).name + PARTS_SUFFIX)
        if parts.exists():
            raise ArtifactMissingError(
                f"the feature cache {features} is unfinished ({parts.name} holds a partial "
                "run); rerun the `sppdet cache-features` command that started it to finish it")
        raise ArtifactMissingError(f"the feature cache {features} does not exist; run `sppdet "
                                   f"cache-features` on split '{split}' of {dataset} to make it")
    data = VOCDataset(dataset, split, classes)
    model, nms, _, nms_text, class_scorers = _load_detector(
        Path(model_dir), scorer=scorer, use_bbox_reg=use_bbox_reg, fc_path=fc_path,
        score_threshold=score_threshold, max_per_image=max_per_image,
        iou_threshold=iou_threshold, nms_method=nms_method, nms_sigma=nms_sigma,
        use_test_settings=use_test_settings)
    base = scorer or "svm"
    softmax_thresholds = None
    if softmax_candidates:
        if base != "svm" or class_scorers is not None:
            raise ConfigError("softmax candidates are stored beside SVM scores of every class, "
                              f"not with {describe_scorers(model.classes, class_scorers, base)}")
        softmax_thresholds = class_score_thresholds(("softmax",) * len(model.classes),
                                                    score_threshold)
    if list(data.classes) != model.classes:
        raise DataError(f"model {model.name} detects {model.classes} but {data.root} has "
                        f"classes {list(data.classes)}; give the classes in the model's order or "
                        "train a model on this dataset")
    torch_device = resolve_device(device)
    fc = resolve_fc_mode(fc, torch_device)
    inputs = dict(model.inputs)
    inputs["proposals"] = input_ref(proposals, made_by="propose")
    # detections of another dataset's images with the same ids would be silently wrong
    check_made_on(read_record(proposals, made_by="propose"), Path(proposals), data, "propose")
    use_cache = features is not None
    source: FeatureCache | ComputedFeatures
    if use_cache:
        inputs["features"] = input_ref(features, made_by="cache-features")
        source = FeatureCache(features, device=torch_device)
        try:
            check_made_on(source.record, Path(features), data, "cache-features")
        except BaseException:
            source.close()
            raise
        if source.backbone != backbone_name(model.backbone):
            source.close()
            raise DataError(f"model {model.name} was trained on {backbone_name(model.backbone)} "
                            f"features but {features} holds {source.backbone} features; rerun "
                            f"`sppdet cache-features` on split '{split}' of {dataset} with "
                            f"backbone {backbone_name(model.backbone)}")
        feature_desc = f"cache {Path(features).name}"
    else:
        chosen = tuple(scales or model.scales)
        if not chosen:
            raise ConfigError("no feature cache and no scales known for on-the-fly conv5; "
                              "give the scales")
        source = ComputedFeatures(build_model_backbone(model, torch_device), chosen, torch_device,
                                  data.load_image)
        feature_desc = f"computed on the fly at scales {list(chosen)}"
    params = detections_params(model=model.name, data=dataset_params(data),
                               classes=model.classes, nms=nms)
    # absent otherwise: records of one scorer stay current
    if class_scorers is not None:
        params["class_scorers"] = list(class_scorers)
    if softmax_thresholds is not None:
        params[SOFTMAX_CANDIDATES_GROUP] = {"score_threshold": list(softmax_thresholds)}
    params.update({"scorer": base, "bbox_reg": use_bbox_reg,
                   "features": "cache" if use_cache else {"on_the_fly_scales": list(
                       source.scales)}})
    if fc != "float":  # recorded only when approximate, so float artifacts stay up to date
        params["fc"] = {"mode": fc, **({"svd_energy": svd_energy} if fc == "svd" else {})}
    record = Record(STAGE, params, inputs=inputs, stage_version=STAGE_VERSION)
    out = Path(out)
    summary = DetectSummary(path=out, model=model.name,
                            scorer=describe_scorers(model.classes, class_scorers, base),
                            images=len(data),
                            features=feature_desc, left_out=data.left_out, split=split,
                            nms=nms_text)
    try:
        output = StageOutput(out, record, force=force)
        if output.is_current():
            summary.up_to_date = True
            if write_comp4 and not _comp4_current(out, comp4_dir_of(out), split,
                                                  model.classes):
                summary.comp4_dir = write_outputs(out, split, model.classes)
                summary.comp4_rewritten = True
            return summary
        head = model.head.to(torch_device).eval()
        model.head, summary.fc = fast_fc_head(head, fc, energy=svd_energy)
        ids = data.image_ids
        mine = shard_items(ids, shard)
        times = DetectTimes()
        job = _DetectJob(key=(record.digest, str(torch_device)), dataset=str(dataset),
                         split=split, classes=classes, model_dir=str(model_dir),
                         scorer=base, use_bbox_reg=use_bbox_reg, proposals=str(proposals),
                         features=str(features) if use_cache else None,
                         scales=tuple(source.scales), device=str(torch_device), nms=nms,
                         fc=fc, svd_energy=svd_energy,
                         fc_path=None if fc_path is None else str(fc_path),
                         class_scorers=class_scorers, softmax_thresholds=softmax_thresholds)
        given, executor = executor is not None, executor or local_executor(jobs)
        with output.logging(), output.item_store(shard=shard) as store, \
                ItemReader(proposals, made_by="propose") as proposal_reader:
            log_left_out(log, data)
            pending = store.pending(mine)
            start = time.perf_counter()
            # tasks in this process reuse what is loaded here; workers load their own
            seed_process_cache(job.cache_key, _DetectState(model, source, proposal_reader))
            sizes = {i: (data[i].height, data[i].width) for i in pending}
            try:
                results = executor.imap_unordered(
                    _detect_task, ((job, i, sizes[i]) for i in pending))
                for image_id, arrays, attrs, image_times in progress(
                        results, total=len(pending), desc=f"detect {model.name}"):
                    times.add(image_times)
                    if arrays is None:
                        store.write_failure(image_id, attrs)
                        summary.failures[image_id] = attrs
                        log.warning("%s: %s", image_id, attrs)
                        continue
                    store.write(image_id, arrays, attrs)
                    summary.computed += 1
            finally:
                forget_process_cache(job.cache_key)
            summary.reruns = executor.last_run.reruns
            summary.engine = executor.description if given or jobs > 1 else ""
            summary.seconds = time.perf_counter() - start
            summary.resumed = len(mine) - len(pending)
            summary.times_per_image = times.per_image(len(pending))
            summary.windows, summary.distinct = times.windows, times.distinct
            record.summary["seconds_per_image"] = summary.times_per_image
            merge = merge_gate() if merge_gate is not None else True
            final_path = store.finalize(ids, allow_failures=on_error == "skip") if merge \
                else None
            summary.finished = final_path is not None
        if summary.finished:
            with DetectionsReader(out) as reader:
                summary.detections = sum(len(reader.detections(i)) for i in reader.image_ids())
            fault_point("outputs-pending", STAGE, out)
            if write_comp4:
                summary.comp4_dir = write_outputs(out, split, model.classes)
    finally:
        if isinstance(source, FeatureCache):
            source.close()
    return summary


@dataclass(frozen=True)
class _DetectJob:
    """What a worker needs to detect objects in images of a split (small and picklable)."""

    key: tuple
    dataset: str
    split: str
    classes: tuple[str, ...] | None
    model_dir: str
    scorer: str
    use_bbox_reg: bool
    proposals: str
    features: str | None
    scales: tuple[int, ...]
    device: str
    nms: NMSSettings
    fc: str = DEFAULT_FC
    svd_energy: float = DEFAULT_SVD_ENERGY
    fc_path: str | None = None
    class_scorers: tuple[str, ...] | None = None
    softmax_thresholds: tuple[float | None, ...] | None = None

    @property
    def cache_key(self) -> tuple:
        return ("detect", *self.key)


@dataclass
class _DetectState:
    """A process's loaded model, feature source and proposals reader for a :class:`_DetectJob`."""

    model: DetectModel
    source: FeatureCache | ComputedFeatures
    proposals: ItemReader

    @classmethod
    def open(cls, job: _DetectJob) -> "_DetectState":
        import torch

        device = torch.device(job.device)
        scorer = "svm" if needs_svm(job.scorer, job.class_scorers) else "softmax"
        model = load_model(Path(job.model_dir), scorer=scorer,
                           use_bbox_reg=job.use_bbox_reg,
                           fc_path=None if job.fc_path is None else Path(job.fc_path))
        model.head, _ = fast_fc_head(model.head.to(device).eval(), job.fc,
                                     energy=job.svd_energy)
        source: FeatureCache | ComputedFeatures
        if job.features is not None:
            source = FeatureCache(job.features, device=device)
        else:
            data = VOCDataset(job.dataset, job.split, job.classes)
            source = ComputedFeatures(build_model_backbone(model, device), job.scales, device,
                                      data.load_image)
        return cls(model, source, ItemReader(job.proposals, made_by="propose"))

    def close(self) -> None:
        if isinstance(self.source, FeatureCache):
            self.source.close()
        self.proposals.close()


def _detect_task(job: _DetectJob, image_id: str, size: tuple[int, int]
                 ) -> tuple[str, dict | None, Any, DetectTimes]:
    """Worker: the detections artifact's ``(arrays, attrs)`` of one image, or ``None`` and
    the reason of a per-image failure; and the image's times."""
    state = process_cache(job.cache_key, lambda: _DetectState.open(job))
    times = DetectTimes()
    try:
        if image_id not in state.proposals:
            raise DataError(f"{job.proposals} has no proposals for image {image_id}")
        boxes = state.proposals.group(image_id)["boxes"][()]
        t0 = time.perf_counter()
        if isinstance(state.source, ComputedFeatures):
            state.source.maps(image_id)
            times.conv += time.perf_counter() - t0
            t0 = time.perf_counter()
        pooled, inverse = state.source.pool_distinct(image_id, boxes, scale="best")
        times.pool += time.perf_counter() - t0
        softmax = None
        if job.softmax_thresholds is not None:
            final, candidates, softmax = detect_windows_with_softmax(
                state.model, image_id, pooled, boxes, size, nms=job.nms,
                softmax_nms=NMSSettings(class_score_thresholds=job.softmax_thresholds),
                times=times, inverse=inverse)
        else:
            final, candidates = detect_windows(state.model, image_id, pooled, boxes, size,
                                               scorer=job.scorer, nms=job.nms, times=times,
                                               inverse=inverse,
                                               class_scorers=job.class_scorers)
    except DataError as exc:
        return image_id, None, str(exc), times
    arrays, attrs = detection_item(final, candidates, size[1], size[0], softmax)
    return image_id, arrays, attrs, times


@dataclass
class ImageFileResult:
    path: Path
    detections: ImageDetections
    drawn: Path | None


@dataclass
class ImageFilesSummary:
    """What detect on image files did: results per readable file, failures per other file.

    Attributes:
        results: one per image detected, in input order.
        failures: file -> why it could not be detected (unreadable, too small...).
        listing: the ``detections.json`` written (``None`` when nothing is drawn).
        nms: which NMS settings were used and where they came from.
        operating_points: class -> the score from which its detections are kept, when the
            model's test settings chose them (``None``: every detection above the draw
            threshold is drawn, and every detection is listed).
    """

    results: list[ImageFileResult] = field(default_factory=list)
    failures: dict[Path, str] = field(default_factory=dict)
    listing: Path | None = None
    nms: str = ""
    operating_points: dict[str, float | None] | None = None


def drawing_names(images: list[Path]) -> list[str]:
    """``<stem>.detections.png`` per image, made unique: inputs that share a stem (``a/x.jpg``,
    ``b/x.jpg``, ``x.png``) get ``-2``, ``-3``... in input order, so no drawing replaces
    another."""
    names, used = [], set()
    for path in images:
        stem = Path(path).stem or "image"
        name, k = f"{stem}.detections.png", 1
        while name in used:
            k += 1
            name = f"{stem}-{k}.detections.png"
        used.add(name)
        names.append(name)
    return names


def run_images(images: list[Path], *, model_dir: Path, out_dir: Path | None,
               method: str = "ss-fast", max_boxes: int = 2000, scorer: str | None = None,
               use_bbox_reg: bool = True, iou_threshold: float = 0.3,
               score_threshold: float | None = None, max_per_image: int | None = 100,
               scales: tuple[int, ...] | None = None, device: str = "auto",
               draw_threshold: float | None = None, fc: str = DEFAULT_FC,
               svd_energy: float = DEFAULT_SVD_ENERGY, nms_method: str | None = None,
               nms_sigma: float | None = None) -> ImageFilesSummary:
    """Detect objects in plain image files: proposals and conv5 computed on the fly.

    A file that cannot be detected (unreadable, too small) is listed in the summary's
    ``failures`` and the run goes on with the next one.

    Args:
        images: image files.
        model_dir: ``<work>/models/<name>``.
        out_dir: where the drawn images (``<stem>.detections.png``, see
            :func:`drawing_names`) and ``detections.json`` (input path -> detections, for the
            files detected) go; ``None`` draws nothing.
        method: proposal method for the images.
        max_boxes: proposals per image.
        draw_threshold: draw detections scoring above this (default: 0 for SVM scores, 0.5
            for softmax; with mixed scoring 0, which is p = 0.5 for the log-odds of a
            softmax class).
        Others: as :func:`run`.

    With the model's test settings in use (:func:`resolve_nms`) and neither
    ``draw_threshold`` nor ``score_threshold`` given, only the detections scoring at least
    their class's operating point (chosen on validation) are kept, drawn and listed.
    """
    from sppdet.data.images import read_image
    from sppdet.proposals import params_from_dict, propose_image
    from sppdet.detector.drawing import draw_detections, save_image

    model, nms, settings, nms_text, class_scorers = _load_detector(
        Path(model_dir), scorer=scorer, use_bbox_reg=use_bbox_reg, fc_path=None,
        score_threshold=score_threshold, max_per_image=max_per_image,
        iou_threshold=iou_threshold, nms_method=nms_method, nms_sigma=nms_sigma)
    scorer = scorer or "svm"
    operating = settings.operating_scores if settings is not None and \
        draw_threshold is None and score_threshold is None else None
    torch_device = resolve_device(device)
    chosen = tuple(scales or model.scales)
    if not chosen:
        raise ConfigError("the model records no scales; give the scales to compute conv5 at")
    backbone = build_model_backbone(model, torch_device)
    model.head, _ = fast_fc_head(model.head.to(torch_device).eval(),
                                 resolve_fc_mode(fc, torch_device), energy=svd_energy)
    loaded: dict[str, Any] = {}
    source = ComputedFeatures(backbone, chosen, torch_device, lambda key: loaded[key])
    params = params_from_dict(method, {"max_boxes": max_boxes})
    threshold = draw_threshold if draw_threshold is not None else \
        DEFAULT_DRAW_THRESHOLDS[scorer]
    summary = ImageFilesSummary(nms=nms_text)
    if operating is not None:
        summary.operating_points = dict(zip(model.classes, operating))
    times = DetectTimes()
    paths = [Path(p) for p in images]
    for path, drawing in progress(list(zip(paths, drawing_names(paths))), total=len(paths),
                                  desc="detect"):
        key = path.stem.replace(" ", "_") or "image"
        try:
            image = read_image(path)
            loaded.clear()
            loaded[key] = image
            boxes = propose_image(image, method, params).boxes
            pooled, inverse = source.pool_distinct(key, boxes, scale="best")
        except DataError as exc:  # one bad file must not cost the others their detections
            reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            summary.failures[path] = reason
            log.warning("%s", reason)
            continue
        final, _ = detect_windows(model, key, pooled, boxes, image.shape[:2], scorer=scorer,
                                  nms=nms, times=times, inverse=inverse,
                                  class_scorers=class_scorers)
        if operating is not None:
            final = at_operating_points(final, operating, threshold)
        drawn = None
        if out_dir is not None:
            picture = draw_detections(image, final, model.classes,
                                      min_score=None if operating is not None else threshold)
            drawn = save_image(Path(out_dir) / drawing, picture)
        summary.results.append(ImageFileResult(path=path, detections=final, drawn=drawn))
    if out_dir is not None:
        import json

        listing = {str(r.path): [
            {"class": model.classes[int(label)], "score": float(score),
             "box_xyxy": [float(v) for v in box]}
            for box, score, label in zip(r.detections.boxes, r.detections.scores,
                                         r.detections.labels)] for r in summary.results}
        summary.listing = write_text_atomic(Path(out_dir) / "detections.json",
                                            json.dumps(listing, indent=1) + "\n")
    return summary
