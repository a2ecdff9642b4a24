"""Commands about datasets: ``inspect-data`` and ``make-demo-data``."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.data.synthetic.config import SHAPE_CLASSES, DemoDataConfig
from sppdet.stages.params import TRAIN_SPLIT

from .options import (classes_option, dataset_argument, jobs_option, option, parse_classes,
                      seed_option, split_option, strict_option)


@click.command("inspect-data")
@dataset_argument
@split_option(TRAIN_SPLIT)
@classes_option
@strict_option
@option("--check-images/--no-check-images", default=True, show_default=True,
        help="Decode every image (finds unreadable files and size mismatches).")
@option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
        default=None, help="Also write the report as JSON to this file.")
@option("--max-problems", type=click.IntRange(min=0), default=None,
        show_default="all", help="List at most this many problems.")
def inspect_data_command(dataset: str, split: str, classes: str | None, strict: bool,
                         check_images: bool, json_path: Path | None,
                         max_problems: int | None) -> None:
    """Count images, objects and difficult objects per class, and list every problem.

    DATASET is a VOC-layout folder (Annotations/, JPEGImages/, ImageSets/Main/).
    With --strict the command fails (exit 1) when it finds a severe problem.
    """
    from sppdet.stages import inspect_data

    report = inspect_data.run(dataset, split, classes=parse_classes(classes), strict=False,
                              check_images=check_images)
    click.echo(inspect_data.format_report(report, max_problems))
    if json_path is not None:
        inspect_data.write_json(report, json_path)
        click.echo(f"Report written to {json_path}")
    if strict and report.n_severe:
        raise click.ClickException(f"{report.n_severe} severe problem(s) found (--strict)")


_DEFAULTS = DemoDataConfig()


@click.command("make-demo-data")
@click.argument("out", type=click.Path(path_type=Path))
@seed_option
@option("--n-trainval", type=click.IntRange(min=1), default=_DEFAULTS.n_trainval,
        show_default=True, help="Images in the trainval split (train + val).")
@option("--n-test", type=click.IntRange(min=0), default=_DEFAULTS.n_test,
        show_default=True, help="Images in the test split.")
@option("--n-classes", type=click.IntRange(min=1, max=len(SHAPE_CLASSES)),
        default=_DEFAULTS.n_classes, show_default=True,
        help=f"Object classes, taken in this order: {', '.join(SHAPE_CLASSES)}.")
@option("--image-size", type=(int, int), metavar="W H",
        default=(_DEFAULTS.image_width, _DEFAULTS.image_height), show_default=True,
        help="Nominal image width and height in pixels (sizes vary a little).")
@option("--force", is_flag=True, default=False,
        help="Replace OUT whatever it holds (a previous demo dataset is always replaced).")
@jobs_option
def make_demo_data_command(out: Path, seed: int, n_trainval: int, n_test: int, n_classes: int,
                           image_size: tuple[int, int], force: bool, jobs: int) -> None:
    """Write a synthetic VOC-layout detection dataset to OUT, deterministic by --seed.

    Shapes that differ by outline and texture (colours are random) on cluttered backgrounds,
    with occlusion, truncation at the border, and tiny or heavily occluded objects marked
    difficult. Splits: train, val, trainval, test.
    """
    from sppdet.stages import make_demo_data

    config = DemoDataConfig(seed=seed, n_trainval=n_trainval, n_test=n_test,
                            n_classes=n_classes, image_width=image_size[0],
                            image_height=image_size[1])
    summary, seconds = make_demo_data.run(out, config, overwrite=force, jobs=jobs)
    click.echo(summary.format_table())
    click.echo(f"Demo dataset written to {out} in {seconds:.1f} s")


COMMANDS = [inspect_data_command, make_demo_data_command]
