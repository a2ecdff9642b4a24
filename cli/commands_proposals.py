"""Commands ``propose`` and ``eval-proposals``."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.io.item_store import parse_shard
from sppdet.proposals import METHODS, default_params
from sppdet.stages import eval_proposals, propose
from sppdet.stages.layout import proposals_path

from .context import Settings, pass_settings
from .options import (classes_option, dataset_argument, force_option, jobs_option,
                      on_error_option, parse_classes, shard_option, split_option)

_SS = default_params("ss-fast")
_EB = default_params("edgeboxes")


@click.command("propose")
@dataset_argument
@split_option("trainval")
@click.option("--method", "-m", type=click.Choice([*METHODS, "import"]), default="ss-fast",
              show_default=True, help="Selective search (fast or quality mode), EdgeBoxes, or "
                                      "import proposals made elsewhere (--import-file).")
@click.option("--max-boxes", type=click.IntRange(min=1), default=_SS.max_boxes,
              show_default=True, help="Keep at most this many boxes per image (selective "
                                      "search keeps a scale-interleaved prefix, so large boxes "
                                      "survive the cap).")
@click.option("--max-size", type=click.IntRange(min=16), default=_SS.max_size,
              show_default=True, help="Shrink images whose longer side exceeds this before "
                                      "proposing (boxes are mapped back to original pixels).")
@click.option("--min-size", type=click.FloatRange(min=0), default=_SS.min_size,
              show_default=True, help="Selective search: drop boxes narrower or lower than "
                                      "this (original pixels).")
@click.option("--edge-model", type=click.Path(dir_okay=False), default=None,
              help="EdgeBoxes: Structured Edge model file (model.yml.gz from opencv_extra). "
                   "Default: a built-in gradient edge map that needs no file.")
@click.option("--max-aspect-ratio", type=click.FloatRange(min=1), default=_EB.max_aspect_ratio,
              show_default=True, help="EdgeBoxes: largest box aspect ratio.")
@click.option("--min-box-area", type=click.FloatRange(min=0), default=_EB.min_box_area,
              show_default=True, help="EdgeBoxes: smallest box area in pixels.")
@click.option("--import-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --method import: an R-CNN selective_search_data .mat file (boxes "
                   "y1 x1 y2 x2, 1-based) or an .npz of image id -> [N, 4] 0-based xyxy boxes.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file. Default: <work-dir>/proposals/<dataset>/<split>.<method>.h5")
@classes_option
@jobs_option
@shard_option
@on_error_option
@force_option
@pass_settings
def propose_command(settings: Settings, dataset: str, split: str, method: str, max_boxes: int,
                    max_size: int, min_size: float, edge_model: str | None,
                    max_aspect_ratio: float, min_box_area: float, import_file: str | None,
                    out: Path | None, classes: str | None, jobs: int, shard: str | None,
                    on_error: str, force: bool) -> None:
    """Object proposals for every image of a split (about 2,000 windows per image).

    Images are processed in parallel (--jobs) and committed one by one: a killed run resumes
    where it stopped. Selective search output is deterministic (seeded per image).
    """
    if method == "edgeboxes":
        options = {"max_boxes": max_boxes, "max_size": max_size, "edge_model": edge_model,
                   "max_aspect_ratio": max_aspect_ratio, "min_box_area": min_box_area}
    elif method == "import":
        options = {}
    else:
        if edge_model:
            raise click.UsageError("--edge-model applies to --method edgeboxes only")
        options = {"max_boxes": max_boxes, "max_size": max_size, "min_size": min_size}
    out = out or proposals_path(settings.work_dir, dataset, split, method)
    summary = propose.run(dataset, split, out, method=method, method_options=options,
                          import_path=import_file, classes=parse_classes(classes), jobs=jobs,
                          shard=parse_shard(shard), on_error=on_error, force=force)
    click.echo(summary.to_text())


@click.command("eval-proposals")
@click.argument("proposals", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dataset_argument
@split_option("trainval")
@click.option("--num-boxes", default="100,300,1000,2000,all", show_default=True,
              help="Box budgets (top-k boxes per image), comma-separated; 'all' for no cap.")
@click.option("--include-difficult", is_flag=True, help="Count difficult objects too.")
@classes_option
def eval_proposals_command(proposals: Path, dataset: str, split: str, num_boxes: str,
                           include_difficult: bool, classes: str | None) -> None:
    """Recall of PROPOSALS at IoU 0.5 and 0.7 and average recall (0.5:0.95) vs. top boxes.

    Writes <proposals>.recall.json and a recall-versus-boxes plot beside the artifact.
    """
    budgets = []
    for part in num_boxes.split(","):
        part = part.strip().lower()
        if part == "all":
            budgets.append(None)
        elif part.isdigit() and int(part) > 0:
            budgets.append(int(part))
        else:
            raise click.BadParameter(f"{part!r} is not a positive integer or 'all'",
                                     param_hint="--num-boxes")
    summary = eval_proposals.run(proposals, dataset, split, num_boxes=tuple(budgets),
                                 include_difficult=include_difficult,
                                 classes=parse_classes(classes))
    click.echo(summary.to_text())


COMMANDS = [propose_command, eval_proposals_command]
