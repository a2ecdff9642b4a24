"""Stage ``demo``: the synthetic dataset, the whole pipeline on it, and pictures.

The recipe (:data:`~stages.pipeline_config.DEMO_PIPELINE`) is the paper's pipeline scaled to a
2-core CPU: the EfficientNet-Lite0 trunk with its packaged ImageNet weights (no download), one
scale, 1,000 selective-search boxes per image, a narrower fc6/fc7 fine-tuned for fewer
iterations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import is_demo_dataset, make_demo_data, read_demo_config
from sppdet.data.voc import VOCDataset
from sppdet.detector.detections_io import DetectionsReader
from sppdet.progress import get_logger
from sppdet.detector.drawing import draw_detections, save_image

from . import pipeline
from .params import DEFAULT_DRAW_THRESHOLDS
from .pipeline import PipelineConfig, PipelineSummary, StageResult
from .pipeline_config import DEMO_FIGURES, DEMO_PIPELINE  # noqa: F401 (re-exported)

log = get_logger("demo")


@dataclass
class DemoSummary:
    data_dir: Path
    pipeline: PipelineSummary
    figures: list[Path] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [self.pipeline.to_text()]
        if self.pipeline.eval_summary is not None:
            lines.append(self.pipeline.eval_summary.to_text())
        if self.figures:
            lines.append(f"Detections drawn on {len(self.figures)} test images: "
                         f"{self.figures[0].parent}")
        return "\n".join(lines)


def run(work_dir: Path, *, data_config: DemoDataConfig = DemoDataConfig(),
        config: PipelineConfig = DEMO_PIPELINE, figures: int = DEMO_FIGURES, force: bool = False,
        on_stage: Callable[[StageResult], None] | None = None) -> DemoSummary:
    """Make (or reuse) the demo dataset in ``<work>/demo-data`` and run the pipeline on it.

    Args:
        work_dir: the work dir.
        data_config: the synthetic dataset's parameters.
        config: the pipeline's parameters.
        figures: test images to draw detections on (``<work>/demo-figures/``).
        force: rebuild the dataset and every artifact.
        on_stage: called after each pipeline stage.
    """
    work_dir = Path(work_dir)
    data_dir = work_dir / "demo-data"
    if force or not (is_demo_dataset(data_dir) and read_demo_config(data_dir) == data_config):
        log.info("making the demo dataset in %s", data_dir)
        make_demo_data(data_dir, data_config, jobs=config.jobs)
    result = pipeline.run(data_dir, work_dir, config, force=force, on_stage=on_stage)
    summary = DemoSummary(data_dir=data_dir, pipeline=result)
    if figures and result.detections is not None:
        data = VOCDataset(data_dir, config.test_split)
        out_dir = work_dir / "demo-figures"
        with DetectionsReader(result.detections) as reader:
            for image_id in reader.image_ids()[:figures]:
                detections = reader.detections(image_id)
                threshold = DEFAULT_DRAW_THRESHOLDS[config.detect.scorer]
                drawn = draw_detections(data.load_image(image_id), detections, data.classes,
                                        min_score=threshold)
                summary.figures.append(save_image(out_dir / f"{image_id}.png", drawn))
    return summary


def demo_config_with(**changes: object) -> PipelineConfig:
    """:data:`DEMO_PIPELINE` with top-level fields replaced (tests use smaller runs)."""
    return dataclasses.replace(DEMO_PIPELINE, **changes)
