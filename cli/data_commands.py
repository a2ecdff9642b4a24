"""Commands about datasets: ``inspect-data`` and ``make-demo-data``."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.stages import inspect_data

from .options import classes_option, dataset_argument, parse_classes, split_option, strict_option


@click.command("inspect-data")
@dataset_argument
@split_option("trainval")
@classes_option
@strict_option
@click.option("--check-images/--no-check-images", default=True, show_default=True,
              help="Decode every image (finds unreadable files and size mismatches).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the report as JSON to this file.")
@click.option("--max-problems", type=click.IntRange(min=0), default=None,
              help="List at most this many problems (default: all).")
def inspect_data_command(dataset: str, split: str, classes: str | None, strict: bool,
                         check_images: bool, json_path: Path | None,
                         max_problems: int | None) -> None:
    """Count images, objects and difficult objects per class, and list every problem.

    DATASET is a VOC-layout folder (Annotations/, JPEGImages/, ImageSets/Main/).
    With --strict the command fails (exit 1) when it finds a severe problem.
    """
    report = inspect_data.run(dataset, split, classes=parse_classes(classes), strict=False,
                              check_images=check_images)
    click.echo(inspect_data.format_report(report, max_problems))
    if json_path is not None:
        inspect_data.write_json(report, json_path)
        click.echo(f"Report written to {json_path}")
    if strict and report.n_severe:
        raise click.ClickException(f"{report.n_severe} severe problem(s) found (--strict)")


COMMANDS = [inspect_data_command]
