"""Stage ``eval-proposals``: recall of a proposals artifact versus the number of top boxes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sppdet.io.item_store import ItemReader
from sppdet.io.records import Record, input_ref, write_artifact
from sppdet.data.voc import VOCDataset
from sppdet.errors import DataError
from sppdet.parallel.executors import Executor, chunks
from sppdet.progress import progress
from sppdet.proposals import ImageGroundTruth, RecallReport, evaluate_recall
from sppdet.proposals.recall import image_best_ious

from .common import dataset_params

STAGE = "eval-proposals"
#: Images per task on an executor (overlaps take about a millisecond per image).
CHUNK_IMAGES = 256


def _recall_rows(proposals: str, items: list[tuple[str, ImageGroundTruth]],
                 budgets: list[int | None], include_difficult: bool) -> list[tuple[str, Any]]:
    """Worker: :func:`image_best_ious` of a chunk of images, reading their boxes."""
    with ItemReader(proposals, made_by="propose") as reader:
        return [(image_id, image_best_ious(image_id, truth, reader.group(image_id)["boxes"][()],
                                           budgets, include_difficult))
                for image_id, truth in items]


@dataclass
class ProposalRecallSummary:
    report: RecallReport
    json_path: Path
    plot_path: Path

    def to_text(self) -> str:
        return (f"{self.report.to_text()}\nRecall written to {self.json_path}\n"
                f"Recall-versus-boxes plot: {self.plot_path}")


def run(proposals: str | Path, dataset: str | Path, split: str, *,
        num_boxes: tuple[int | None, ...] = (100, 300, 1000, 2000, None),
        include_difficult: bool = False, classes: tuple[str, ...] | None = None,
        out_prefix: Path | None = None, executor: Executor | None = None,
        ) -> ProposalRecallSummary:
    """Recall at IoU 0.5 / 0.7 and average recall (0.5:0.95), per class and overall.

    Writes ``<proposals>.recall.json`` (with a record) and ``<proposals>.recall.png`` beside
    the artifact unless ``out_prefix`` is given. With an ``executor`` (e.g. a Dask cluster)
    the workers read the boxes and compute the overlaps, in chunks of images.

    Raises:
        DataError: the proposals were made on another split than ``split``.
    """
    proposals = Path(proposals)
    data = VOCDataset(dataset, split, classes)
    with ItemReader(proposals, made_by="propose") as reader:
        made_on = reader.record.params.get("data", {})
        if made_on.get("split") not in (None, split):
            raise DataError(f"{proposals} holds proposals of split '{made_on.get('split')}', "
                            f"not '{split}'")
        boxes = {}
        for image_id in data.image_ids:
            if image_id not in reader:
                raise DataError(f"{proposals} has no proposals for image {image_id} of split "
                                f"'{split}'" + (f" (failed: {reader.failures[image_id]})"
                                                if image_id in reader.failures else ""))
            if executor is None:
                boxes[image_id] = reader.group(image_id)["boxes"][()]
    ground_truth = {
        ann.image_id: ImageGroundTruth(ann.boxes, [data.classes[i] for i in ann.labels],
                                       ann.difficult)
        for ann in data
    }
    image_rows = None
    if executor is not None:
        size = max(1, min(CHUNK_IMAGES, -(-len(ground_truth) // (4 * executor.threads))))
        tasks = [(str(proposals), chunk, list(num_boxes), include_difficult)
                 for chunk in chunks(list(ground_truth.items()), size)]
        image_rows = {image_id: result
                      for done in progress(executor.imap_unordered(_recall_rows, tasks),
                                           total=len(tasks), desc="recall", unit="chunk")
                      for image_id, result in done}
    report = evaluate_recall(ground_truth, boxes, num_boxes=num_boxes,
                             include_difficult=include_difficult, image_rows=image_rows)
    prefix = out_prefix or proposals.with_suffix("")
    json_path = prefix.with_name(prefix.name + ".recall.json")
    plot_path = prefix.with_name(prefix.name + ".recall.png")
    record = Record(STAGE, {"num_boxes": list(num_boxes), "include_difficult": include_difficult,
                            "data": dataset_params(data)},
                    inputs={"proposals": input_ref(proposals, made_by="propose")})
    with write_artifact(json_path, record) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    report.plot(plot_path, title=f"{proposals.name}: recall vs. boxes ({data.split})")
    return ProposalRecallSummary(report=report, json_path=json_path, plot_path=plot_path)
