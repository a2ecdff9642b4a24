"""Stage ``propose``: object proposals for every image of a split, one artifact per method.

The artifact (``proposals/<dataset>/<split>.<method>.h5``) holds per image ``boxes`` (float32
``[N, 4]``, 0-based continuous xyxy in original pixels, rank order), ``scores`` (float32 ``[N]``,
methods that score) and the attributes ``width`` and ``height``. Images are committed one by one
(a killed run resumes), processed in parallel with joblib, and shardable with ``shard=(i, n)``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.io.item_store import shard_items
from sppdet.io.records import Record, read_record
from sppdet.data.images import read_image
from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError, DataError
from sppdet.parallel.executors import Executor
from sppdet.progress import get_logger
from sppdet.proposals import (METHODS, ProposalError, load_npz, load_rcnn_mat,
                              params_from_dict, propose_image, validate_proposals)

from .common import LoopStats, dataset_params, engine_line, format_seconds, run_per_item
from .left_out import left_out_lines, log_left_out
from .runner import StageOutput, item_summary_lines

log = get_logger("propose")
STAGE = "propose"
STAGE_VERSION = 1


@dataclass
class ProposeSummary:
    """What a propose run did (printed at the end, stored in the record)."""

    path: Path
    method: str
    images: int
    boxes_min: int = 0
    boxes_median: float = 0.0
    boxes_max: int = 0
    seconds: float = 0.0
    seconds_per_image: float = 0.0
    resumed: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    up_to_date: bool = False
    finished: bool = True
    problems: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    split: str = ""
    engine: str = ""
    reruns: int = 0

    def to_text(self) -> str:
        if self.up_to_date:
            return "\n".join([f"Proposals are up to date: {self.path}",
                              *left_out_lines(self.left_out, self.split)])
        lines = [f"Proposals ({self.method}) for {self.images} images -> {self.path}"]
        lines.append(f"  boxes per image: min {self.boxes_min}, median {self.boxes_median:g}, "
                     f"max {self.boxes_max}")
        if self.seconds_per_image:
            lines.append(f"  time: {format_seconds(self.seconds)} ({self.seconds_per_image:.2f} "
                         f"s per image per worker; {self.resumed} already done)")
        if self.engine:
            lines.append(engine_line(self.engine, self.reruns))
        if self.problems:
            lines.append(f"  import problems: {len(self.problems)}")
            lines.extend(f"    {p}" for p in self.problems[:20])
        lines += left_out_lines(self.left_out, self.split)
        lines.extend(item_summary_lines(self.failures, self.finished))
        return "\n".join(lines)


def _propose_one(image_path: str, method: str, params: Any) -> tuple[dict, dict]:
    """Worker: proposals of one image (runs in a joblib process)."""
    image = read_image(image_path)
    result = propose_image(image, method, params)
    arrays = {"boxes": np.asarray(result.boxes, dtype=np.float32).reshape(-1, 4)}
    if result.scores is not None:
        arrays["scores"] = np.asarray(result.scores, dtype=np.float32).reshape(-1)
    return arrays, {"width": int(image.shape[1]), "height": int(image.shape[0])}


def run(dataset: str | Path, split: str, out: Path, *, method: str = "ss-fast",
        method_options: dict[str, Any] | None = None, import_path: str | Path | None = None,
        classes: tuple[str, ...] | None = None, jobs: int = 1,
        shard: tuple[int, int] | None = None, on_error: str = "fail",
        force: bool = False, executor: Executor | None = None) -> ProposeSummary:
    """Compute (or import) proposals for every image of ``split`` and write ``out``.

    Args:
        dataset: VOC-layout dataset folder.
        split: split name.
        out: the artifact path.
        method: ``ss-fast``, ``ss-quality``, ``edgeboxes`` or ``import``.
        method_options: keyword arguments of the method's parameter dataclass
            (e.g. ``max_boxes``, ``max_size``, ``edge_model``).
        import_path: the ``.mat`` / ``.npz`` file for ``method="import"``.
        classes: class list of the dataset (recorded; proposals do not use it).
        jobs: worker processes.
        shard: ``(i, n)`` to process one shard.
        on_error: ``fail`` or ``skip`` for per-image failures (always listed).
        force: rebuild even if up to date; discard a partial run with other options.
        executor: where the images are processed (e.g. a Dask cluster); default: ``jobs``.

    Raises:
        ConfigError: bad options. DataError: the dataset cannot be read.
        ArtifactError: per-image failures with ``on_error="fail"``, or a locked output.
    """
    if method not in (*METHODS, "import"):
        raise ConfigError(f"unknown proposal method {method!r}; choose from "
                          f"{', '.join((*METHODS, 'import'))}")
    if (method == "import") != (import_path is not None):
        raise ConfigError("import_path is needed with method 'import', and only then")
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    data = VOCDataset(dataset, split, classes)
    out = Path(out)
    if method == "import":
        method_params: dict[str, Any] = {"import_file": str(Path(import_path).resolve())}
        params_obj = None
    else:
        params_obj = params_from_dict(method, dict(method_options or {}))
        method_params = asdict(params_obj)
    record = Record(STAGE, {"method": method, "method_params": method_params,
                            "data": dataset_params(data)}, stage_version=STAGE_VERSION)
    output = StageOutput(out, record, force=force)
    if output.is_current():
        return ProposeSummary(path=out, method=method, images=len(data), up_to_date=True,
                              left_out=data.left_out, split=split)
    ids = data.image_ids
    with output.logging():
        log.debug("propose %s %s -> %s with %s", dataset, split, out, method_params)
        left_out = log_left_out(log, data)
        if method == "import":
            summary = _run_import(data, output, Path(import_path))
            summary.left_out, summary.split = left_out, split
            return summary
        with output.item_store(shard=shard) as store:
            stats: LoopStats = run_per_item(
                store, shard_items(ids, shard), _propose_one,
                lambda i: (str(data[i].image_path), method, params_obj),
                jobs=jobs, desc=f"propose {method}", errors=(DataError, ProposalError),
                executor=executor)
            final = store.finalize(ids, allow_failures=on_error == "skip")
        summary = ProposeSummary(path=out, method=method, images=len(ids),
                                 seconds=stats.seconds,
                                 seconds_per_image=stats.seconds_per_item,
                                 resumed=stats.skipped_done, failures=store.failures()
                                 if final is None else read_record(out).summary.get("failures", {}),
                                 finished=final is not None, left_out=left_out, split=split,
                                 engine=stats.engine if executor is not None else "",
                                 reruns=stats.reruns)
        if final is not None:
            _fill_counts(summary, out)
        return summary


def _run_import(data: VOCDataset, output: StageOutput, import_path: Path) -> ProposeSummary:
    out = output.path
    if import_path.suffix.lower() == ".mat":
        proposals = load_rcnn_mat(import_path)
    elif import_path.suffix.lower() == ".npz":
        proposals = load_npz(import_path)
    else:
        raise ConfigError(f"{import_path}: import reads R-CNN .mat files or sppdet .npz files")
    sizes = {a.image_id: (a.height, a.width) for a in data}
    proposals, problems = validate_proposals(proposals, sizes, source=str(import_path))
    for problem in problems:
        log.warning("%s", problem)
    ids = data.image_ids
    with output.item_store() as store:
        for image_id in ids:
            result = proposals.get(image_id)
            boxes = np.zeros((0, 4), np.float32) if result is None else result.boxes
            arrays = {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4)}
            if result is not None and result.scores is not None:
                arrays["scores"] = np.asarray(result.scores, np.float32)
            ann = data[image_id]
            store.write(image_id, arrays, {"width": ann.width, "height": ann.height})
        output.record.summary["import_problems"] = problems
        store.finalize(ids)
    summary = ProposeSummary(path=out, method="import", images=len(ids), problems=problems)
    _fill_counts(summary, out)
    return summary


def _fill_counts(summary: ProposeSummary, out: Path) -> None:
    from sppdet.io.item_store import ItemReader

    with ItemReader(out) as reader:
        counts = [int(reader.group(i)["boxes"].shape[0]) for i in reader.ids()]
    if counts:
        summary.boxes_min = min(counts)
        summary.boxes_median = statistics.median(counts)
        summary.boxes_max = max(counts)
