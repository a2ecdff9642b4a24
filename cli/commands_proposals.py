"""Commands ``propose`` and ``eval-proposals``."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.stages.params import IMPORT_METHOD, TRAIN_SPLIT, ProposeOptions

from .context import Settings, pass_settings
from .options import (classes_option, dask_option, dataset_argument, force_option, jobs_option,
                      method_choice, on_error_option, option, param_option, parse_classes,
                      shard_option, split_option)
from .remedies import summary_text


@click.command("propose")
@dataset_argument
@split_option(TRAIN_SPLIT)
@param_option(ProposeOptions, "method", "--method", "-m", type=method_choice(),
              help="Selective search (fast or quality mode), EdgeBoxes, or import proposals "
                   "made elsewhere (--import-file).")
@param_option(ProposeOptions, "max_boxes", "--max-boxes",
              help="Keep at most this many boxes per image (selective search keeps a "
                   "prefix of its randomised hierarchy order, which mixes all box sizes).")
@param_option(ProposeOptions, "max_size", "--max-size",
              help="Shrink images whose longer side exceeds this before proposing (boxes are "
                   "mapped back to original pixels).")
@param_option(ProposeOptions, "min_size", "--min-size",
              help="Selective search: drop boxes narrower or lower than this (original "
                   "pixels).")
@param_option(ProposeOptions, "edge_model", "--edge-model",
              type=click.Path(dir_okay=False), show_default="a built-in gradient edge map "
                                                             "that needs no file",
              help="EdgeBoxes: Structured Edge model file (model.yml.gz from opencv_extra).")
@param_option(ProposeOptions, "max_aspect_ratio", "--max-aspect-ratio",
              help="EdgeBoxes: largest box aspect ratio.")
@param_option(ProposeOptions, "min_box_area", "--min-box-area",
              help="EdgeBoxes: smallest box area in pixels.")
@option("--import-file", type=click.Path(exists=True, dir_okay=False), default=None,
        help="With --method import: an R-CNN selective_search_data .mat file (boxes "
             "y1 x1 y2 x2, 1-based) or an .npz of image id -> [N, 4] 0-based xyxy boxes.")
@option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
        show_default="<work-dir>/proposals/<dataset-tag>/<split>.<method>.h5",
        help="Output file.")
@classes_option
@jobs_option
@dask_option
@shard_option
@on_error_option
@force_option
@pass_settings
def propose_command(settings: Settings, dataset: str, split: str, method: str, max_boxes: int,
                    max_size: int, min_size: float, edge_model: str | None,
                    max_aspect_ratio: float, min_box_area: float, import_file: str | None,
                    out: Path | None, classes: str | None, jobs: int, dask: str | None,
                    shard: tuple[int, int] | None, on_error: str, force: bool) -> None:
    """Object proposals for every image of a split (about 2,000 windows per image).

    Images are processed in parallel (--jobs) and committed one by one: a killed run resumes
    where it stopped. Selective search output is deterministic (seeded per image).
    """
    if (method == IMPORT_METHOD) != (import_file is not None):
        raise click.UsageError("--import-file is needed with --method import, and only then")
    if edge_model and method != "edgeboxes":
        raise click.UsageError("--edge-model applies to --method edgeboxes only")
    from sppdet.parallel.dask_cluster import open_executor
    from sppdet.stages import propose
    from sppdet.stages.layout import proposals_path

    options = {} if method == IMPORT_METHOD else ProposeOptions(
        method=method, max_boxes=max_boxes, max_size=max_size, min_size=min_size,
        max_aspect_ratio=max_aspect_ratio, min_box_area=min_box_area,
        edge_model=edge_model).method_options()
    out = out or proposals_path(settings.work_dir, dataset, split, method)
    with open_executor(dask, jobs=jobs) as executor:
        summary = propose.run(dataset, split, out, method=method, method_options=options,
                              import_path=import_file, classes=parse_classes(classes),
                              jobs=jobs, shard=shard, on_error=on_error, force=force,
                              executor=executor)
    click.echo(summary_text(summary))


class BudgetsType(click.ParamType):
    """``"100,300,all"`` -> ``(100, 300, None)``: positive box budgets, ``all`` for no cap."""

    name = "N1,N2,...|all"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int | None, ...]:
        if isinstance(value, tuple):
            return value
        budgets: list[int | None] = []
        for part in str(value).split(","):
            part = part.strip().lower()
            if part == "all":
                budgets.append(None)
            elif part.isdigit() and int(part) > 0:
                budgets.append(int(part))
            else:
                self.fail(f"{part!r} is not a positive integer or 'all'", param, ctx)
        return tuple(budgets)


@click.command("eval-proposals")
@dataset_argument
@click.argument("proposals", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@split_option(TRAIN_SPLIT)
@option("--num-boxes", type=BudgetsType(), default="100,300,1000,2000,all",
        show_default=True,
        help="Box budgets (top-k boxes per image), comma-separated; 'all' for no cap.")
@option("--include-difficult/--no-include-difficult", default=False, show_default=True,
        help="Count difficult objects too.")
@classes_option
@jobs_option
@dask_option
def eval_proposals_command(dataset: str, proposals: Path, split: str,
                           num_boxes: tuple[int | None, ...], include_difficult: bool,
                           classes: str | None, jobs: int, dask: str | None) -> None:
    """Recall of PROPOSALS at IoU 0.5 and 0.7 and average recall (0.5:0.95) vs. top boxes.

    DATASET gives the ground truth of --split; PROPOSALS is an artifact of `sppdet propose`.
    Writes <proposals>.recall.json and a recall-versus-boxes plot beside the artifact.
    """
    from sppdet.parallel.dask_cluster import open_executor
    from sppdet.parallel.executors import local_executor
    from sppdet.stages import eval_proposals

    with open_executor(dask, jobs=jobs) as executor:
        summary = eval_proposals.run(proposals, dataset, split, num_boxes=num_boxes,
                                     include_difficult=include_difficult,
                                     classes=parse_classes(classes),
                                     executor=executor or (local_executor(jobs) if jobs > 1
                                                           else None))
    click.echo(summary_text(summary))


COMMANDS = [propose_command, eval_proposals_command]
