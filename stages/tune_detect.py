"""Stage ``tune-detect``: choose a model's test settings on the held-out validation split.

The model's SVMs and box regressors train on ``trainval``, so they have seen ``val``; only its
fc layers kept ``val`` held out (``finetune``). So the choice is made with a *selection
model*: SVMs and box regressors trained like the model's (the settings in their records) on
the split the fc layers were fine-tuned on, with the same fc layers, into
``models/<name>/selection/``. It detects the validation split (keeping every candidate window
above the score threshold), and :func:`sppdet.detector.tuning.choose_test_settings` picks per
class the scorer, the NMS and the F1-best operating point. With the SVM scorer and
``choose_scorer``, the same detection pass also keeps every class's candidates scored by the
fc8 softmax as log-odds (fc8 reads the SVMs' fc7 activations: the windows are pooled and run
through fc6/fc7 once), and a class is scored by the softmax only where it beats the SVMs in
at least a share ``confidence`` of bootstrap resamples of the validation images. A class
keeps the paper's hard NMS at 0.3
unless a setting beats it in at least a share ``confidence`` of bootstrap resamples of the
validation images (then the best such setting by validation AP). The result is
``models/<name>/test_settings.json``; its record names the model's parts, so retraining one
of them makes the settings stale (``detect`` then says so and uses the defaults) and reruns
this stage.

Inputs all come from the model's records: the splits, proposals and feature caches from
``fc.pt``'s (what fine-tuning read), the training settings from ``svm.npz``'s and
``bbox_reg.npz``'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppdet.data.voc import VOCDataset
from sppdet.detector.detections_io import ClassNMS, DetectionsReader
from sppdet.detector.tuning import (AP_TOLERANCE, DEFAULT_CONFIDENCE, DEFAULT_NMS,
                                    DEFAULT_RESAMPLES, NMS_GRID, TEST_SETTINGS_FILE,
                                    choose_test_settings, settings_file_content,
                                    write_test_settings_file)
from sppdet.errors import ArtifactError, DataError, Remedy
from sppdet.evaluation.voc_ap import ImageGroundTruth
from sppdet.io.records import Record, input_ref, read_record
from sppdet.parallel.executors import Executor
from sppdet.progress import get_logger

from . import detect, train_bbox_reg, train_svm
from .common import format_seconds
from .runner import StageOutput

log = get_logger("tune_detect")
STAGE = "tune-detect"
STAGE_VERSION = 1
#: The selection model's folder inside the model's.
SELECTION_DIR = "selection"


@dataclass
class TuneSummary:
    """What a tune-detect run did (``skipped``: why nothing was chosen)."""

    path: Path
    model: str
    skipped: str | None = None
    up_to_date: bool = False
    content: dict[str, Any] | None = None
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_text(self) -> str:
        if self.skipped is not None:
            return f"Test settings of model {self.model} not chosen: {self.skipped}"
        head = (f"Test settings are up to date: {self.path}"
                if self.up_to_date else f"Test settings of model {self.model} -> {self.path}")
        lines = [head, *(f"  {step}" for step in self.steps)]
        if self.content is not None:
            lines += settings_table(self.content)
        if self.seconds and not self.up_to_date:
            lines.append(f"  time: {format_seconds(self.seconds)}")
        return "\n".join(lines)


def _ap(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:5.1f}"


def settings_table(content: Mapping[str, Any]) -> list[str]:
    """The per-class choice as summary lines (from ``test_settings.json``'s content)."""
    default = ClassNMS.from_params(content["default"]).describe()
    classes = content["classes"]
    width = max([len("class")] + [len(n) for n in classes])
    first = f"AP, {default}"
    lines = [f"  chosen on split '{content['val_split']}' by {content['metric']} AP; operating "
             "point: the score of best F1 there,",
             "  for drawings and image files (evaluation keeps every detection)",
             f"  {'class':<{width}}  {first}  {'chosen NMS':<18}  AP, chosen  operating point "
             "(precision / recall)"]
    for name, c in classes.items():
        point = c["operating_point"]
        # a softmax class of an SVM detector scores as log-odds (mixed scoring)
        unit = ("log-odds" if c.get("scorer", content["scorer"]) != content["scorer"]
                else "score")
        at = "none (no true positive)" if point is None else (
            f"{unit} >= {point['score']:.3g} ({point['precision']:.2f} / "
            f"{point['recall']:.2f})")
        lines.append(f"  {name:<{width}}  {_ap(c['val_ap_default']):>{len(first)}}  "
                     f"{ClassNMS.from_params(c['nms']).describe():<18}  "
                     f"{_ap(c['val_ap_chosen']):>10}  {at}")
    val_map = content["val_map"]
    lines.append(f"  {'mean':<{width}}  {_ap(val_map['default']):>{len(first)}}  {'':<18}  "
                 f"{_ap(val_map['chosen']):>10}")
    return lines + scorer_lines(content) + choice_lines(content)


def scorer_lines(content: Mapping[str, Any]) -> list[str]:
    """Which scores each class has and why: per class, the validation AP of the SVMs and of
    the softmax under the default NMS and the share of resamples softmax won (from
    ``test_settings.json``'s content; none for a file without a scorer choice). The APs
    above are under each class's chosen scorer."""
    classes = content["classes"]
    if not any("val_ap_scorer" in c for c in classes.values()):
        return []
    boot = content.get("bootstrap") or {}
    confidence = float(boot.get("confidence") or 0.0)
    lines = [f"  scorer per class: the fc8 softmax (log-odds) replaces the SVMs only when it "
             f"beats them in at least {100 * confidence:g}%" if confidence > 0 else
             "  scorer per class: the best validation AP (confidence 0)"]
    for name, c in classes.items():
        aps = c.get("val_ap_scorer") or {}
        svm, soft = aps.get("svm"), aps.get("softmax")
        if svm is None:
            lines.append(f"    {name}: {c.get('scorer', 'svm')} (no validation object)")
            continue
        lines.append(f"    {name}: {c.get('scorer', 'svm')} (val AP softmax "
                     f"{_ap(soft).strip()} vs svm {_ap(svm).strip()}"
                     f"{_share(c.get('softmax_win_fraction'))})")
    return lines


def _share(value: float | None) -> str:
    return "" if value is None else f", better in {100 * value:.1f}% of resamples"


def choice_lines(content: Mapping[str, Any]) -> list[str]:
    """Why each class has its NMS: the chosen setting's validation AP against the default's
    and the share of bootstrap resamples it won; where the default was kept, the same for the
    best other setting (from ``test_settings.json``'s content; none for a file without
    bootstrap)."""
    boot = content.get("bootstrap")
    if boot is None:
        return []
    default = ClassNMS.from_params(content["default"]).describe()
    confidence = float(boot.get("confidence") or 0.0)
    lines = ([f"  NMS per class: another setting replaces {default} only when it beats it in "
              f"at least {100 * confidence:g}%",
              f"  of {boot.get('resamples')} bootstrap resamples of the validation images"]
             if confidence > 0 else ["  NMS per class: the best validation AP (confidence 0)"])
    for name, c in content["classes"].items():
        aps, wins = c["val_ap"], c.get("val_win_fraction") or {}
        chosen = ClassNMS.from_params(c["nms"]).describe()
        base = aps.get(default)
        if base is None:
            lines.append(f"    {name}: {chosen} (no validation object)")
        elif chosen != default:
            lines.append(f"    {name}: {chosen} (val AP {_ap(aps[chosen]).strip()} vs "
                         f"{_ap(base).strip()} {default}{_share(wins.get(chosen))})")
        else:
            # the best other setting: highest AP, the earlier one on a tie
            others = [(ap, -i, s) for i, (s, ap) in enumerate(aps.items())
                      if s != default and ap is not None]
            best = max(others, default=None)
            if best is None or best[0] <= base + AP_TOLERANCE:
                lines.append(f"    {name}: {default} (no setting has a higher val AP)")
            else:
                lines.append(f"    {name}: {default} kept (best other: {best[2]}, val AP "
                             f"{_ap(best[0]).strip()} vs {_ap(base).strip()}"
                             f"{_share(wins.get(best[2]))})")
    return lines


def _split(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    return str(value["split"]) if isinstance(value, Mapping) and "split" in value else None


def _recorded(record: Record, key: str, source: Path) -> Path:
    ref = record.inputs.get(key)
    if ref is None:
        raise ArtifactError(f"{source}: its record does not name its {key.replace('_', ' ')} "
                            "input", remedy=Remedy.rerun("finetune", force=True))
    return Path(ref.path)


def ground_truth(data: VOCDataset) -> list[ImageGroundTruth]:
    """The split's objects as the devkit evaluates them (unclipped XML boxes)."""
    return [ImageGroundTruth(a.image_id, a.boxes, a.labels, a.difficult, a.boxes_voc)
            for a in data]


def run(dataset: str | Path, model_dir: Path, *, scorer: str = "svm",
        use_bbox_reg: bool = True, score_threshold: float | None = None,
        max_per_image: int | None = 100, metric: str = "11point", jobs: int = 1,
        device: str = "auto", force: bool = False, executor: Executor | None = None,
        grid: tuple[ClassNMS, ...] = NMS_GRID, confidence: float = DEFAULT_CONFIDENCE,
        resamples: int = DEFAULT_RESAMPLES, choose_scorer: bool = True) -> TuneSummary:
    """Choose and store the test settings of the model in ``model_dir``.

    Args:
        dataset: the VOC-layout dataset the model was trained on.
        model_dir: ``<work>/models/<name>`` with fc.pt, svm.npz (SVM scorer) and bbox_reg.npz
            (with box regression).
        scorer, use_bbox_reg, score_threshold, max_per_image: how ``detect`` will score, move
            and cap windows (the settings are chosen for that detector).
        metric: the AP that chooses: ``11point`` (VOC2007) or ``area``.
        jobs, device, executor: as the training stages and ``detect``.
        force: retrain the selection model and choose again.
        grid: the NMS settings tried per class.
        confidence: a class leaves the paper's hard NMS at 0.3 only for a setting that beats
            it in at least this share of the bootstrap resamples (0: the best validation AP).
        resamples: bootstrap resamples of the validation images.
        choose_scorer: with the SVM scorer, per class, use the fc8 softmax scores (as
            log-odds) instead of the SVMs' where they beat them in at least ``confidence``
            of the resamples (detect then scores each class with its own scorer).

    Returns:
        The summary; ``skipped`` says why nothing was chosen (no validation split).

    Raises:
        ArtifactMissingError: a part of the model is missing (names the command).
        DataError: the model was trained on another dataset.
    """
    start = time.perf_counter()
    model_dir = Path(model_dir)
    out = model_dir / TEST_SETTINGS_FILE
    summary = TuneSummary(path=out, model=model_dir.name)
    fc_path = model_dir / "fc.pt"
    fc_record = read_record(fc_path, made_by="finetune")
    finetune_split, val_split = _split(fc_record.params, "train"), _split(fc_record.params,
                                                                          "val")
    if finetune_split is None or val_split is None:
        summary.skipped = (f"the fc layers of model {model_dir.name} were fine-tuned without a "
                           "held-out validation split (the dataset has none), so no split is "
                           "left to choose on; detect uses the default NMS")
        log.info("%s", summary.skipped)
        return summary
    trained_on = fc_record.params["val"].get("dataset")
    if trained_on != str(Path(dataset).resolve()):
        raise DataError(f"model {model_dir.name} was trained on {trained_on}, not on "
                        f"{Path(dataset).resolve()}; choose its test settings on that dataset")
    train_proposals = _recorded(fc_record, "proposals_train", fc_path)
    train_features = _recorded(fc_record, "features_train", fc_path)
    val_proposals = _recorded(fc_record, "proposals_val", fc_path)
    val_features = _recorded(fc_record, "features_val", fc_path)
    selection = model_dir / SELECTION_DIR
    model_parts = {"fc": input_ref(fc_path, made_by="finetune")}

    if scorer == "svm":
        svm_path = model_dir / "svm.npz"
        svm_record = read_record(svm_path, made_by="train-svm")
        model_parts["svm"] = input_ref(svm_path)
        p, s = svm_record.params, svm_record.params.get("svm", {})
        trained = train_svm.run(
            dataset, finetune_split, selection / "svm.npz", proposals=train_proposals,
            features=train_features, fc=fc_path, layer=str(p.get("layer", "fc7")),
            seed=int(p.get("seed", 0)), C=float(s.get("C", 1e-3)),
            positive_weight=float(s.get("positive_weight", 2.0)),
            bias_feature=float(s.get("bias_feature", 10.0)),
            include_difficult=bool(s.get("include_difficult", True)),
            max_cached_negatives=int(s.get("max_cached_negatives", 100_000)), jobs=jobs,
            device=device, force=force, executor=executor)
        summary.steps.append("selection SVMs: " + ("up to date" if trained.up_to_date else
                                                   f"trained on split '{finetune_split}'"))
    if use_bbox_reg:
        reg_path = model_dir / "bbox_reg.npz"
        reg_record = read_record(reg_path, made_by="train-bbox-reg")
        model_parts["bbox_reg"] = input_ref(reg_path)
        p = reg_record.params
        trained = train_bbox_reg.run(
            dataset, finetune_split, selection / "bbox_reg.npz", proposals=train_proposals,
            features=train_features, min_iou=float(p.get("min_iou", 0.5)),
            lambda_=float(p.get("lambda", 4000.0)), whiten=bool(p.get("whiten", True)),
            seed=int(p.get("seed", 0)), device=device, force=force)
        summary.steps.append("selection box regressors: " + (
            "up to date" if trained.up_to_date else f"trained on split '{finetune_split}'"))
    # the paper's NMS, given explicitly: a selection model has no test settings of its own,
    # and the candidates (what the choice reads) do not depend on it
    choose_scorer = bool(choose_scorer) and scorer == "svm"
    val_out = selection / f"{val_split}.h5"
    detected = detect.run(
        dataset, val_split, val_out, model_dir=selection, fc_path=fc_path,
        proposals=val_proposals, features=val_features, scorer=scorer,
        use_bbox_reg=use_bbox_reg, score_threshold=score_threshold,
        max_per_image=max_per_image, nms_method=DEFAULT_NMS.method,
        iou_threshold=DEFAULT_NMS.iou_threshold, use_test_settings=False, device=device,
        jobs=jobs, executor=executor, force=force, write_comp4=False,
        softmax_candidates=choose_scorer)
    if not detected.finished:
        raise ArtifactError(f"the detections of split '{val_split}' ({val_out}) are unfinished")
    summary.steps.append(f"selection detections of split '{val_split}': " + (
        "up to date" if detected.up_to_date else f"{detected.images} images"))
    inputs = dict(model_parts)
    if scorer == "svm":
        inputs["selection_svm"] = input_ref(selection / "svm.npz")
    if use_bbox_reg:
        inputs["selection_bbox_reg"] = input_ref(selection / "bbox_reg.npz")
    inputs["val_detections"] = input_ref(val_out, made_by="detect")
    with DetectionsReader(val_out) as reader:
        threshold, cap = reader.nms.score_threshold, reader.nms.max_per_image
        softmax_thresholds = reader.softmax_score_thresholds
    # the same for every class (the softmax default's log-odds, or the threshold given)
    softmax_threshold = None if not softmax_thresholds else softmax_thresholds[0]
    params = {"scorer": scorer, "bbox_reg": use_bbox_reg, "val_split": val_split,
              "finetune_split": finetune_split, "metric": metric,
              "score_threshold": threshold, "max_per_image": cap,
              "grid": [g.to_params() for g in grid], "confidence": confidence,
              "resamples": resamples, "choose_scorer": choose_scorer}
    output = StageOutput(out, Record(STAGE, params, inputs=inputs,
                                     stage_version=STAGE_VERSION), force=force)
    if output.is_current():
        summary.up_to_date = True
        summary.content = json.loads(out.read_text())
        return summary
    with output.writing():
        data = VOCDataset(dataset, val_split, require_images=False, clip_boxes=False)
        with DetectionsReader(val_out) as reader:
            if list(reader.classes) != list(data.classes):
                raise DataError(f"{val_out} holds classes {list(reader.classes)}, split "
                                f"'{val_split}' of {dataset} has {list(data.classes)}")
            candidates = [reader.candidates(i) for i in data.image_ids]
            softmax_candidates = ([reader.softmax_candidates(i) for i in data.image_ids]
                                  if choose_scorer else None)
        result = choose_test_settings(ground_truth(data), candidates, data.classes,
                                      score_threshold=threshold, max_per_image=cap, grid=grid,
                                      metric=metric, confidence=confidence,
                                      resamples=resamples, scorer=scorer,
                                      softmax_candidates=softmax_candidates,
                                      softmax_score_threshold=softmax_threshold)
        content = settings_file_content(
            result, scorer=scorer, bbox_reg=use_bbox_reg, val_split=val_split,
            score_threshold=threshold, max_per_image=cap, metric=metric,
            inputs={name: ref.digest for name, ref in inputs.items()})
        summary.content = content
        output.commit(lambda tmp: write_test_settings_file(tmp, content),
                      summary={"val_map": content["val_map"]})
    summary.seconds = time.perf_counter() - start
    log.info("%s", "\n".join(settings_table(content)))
    return summary
