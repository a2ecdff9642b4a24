"""Options that several commands share, each as one decorator (sqlite-utils style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def dataset_argument(func: F) -> F:
    """DATASET: a VOC-layout dataset folder."""
    return click.argument(
        "dataset", type=click.Path(exists=True, file_okay=False, path_type=str),
    )(func)


def split_option(default: str | None = None, *, help_text: str = "Image split to read "
                 "(ImageSets/Main/<split>.txt).") -> Callable[[F], F]:
    def decorator(func: F) -> F:
        return click.option("--split", "-s", default=default, required=default is None,
                            show_default=default is not None, help=help_text)(func)
    return decorator


def classes_option(func: F) -> F:
    return click.option(
        "--classes", default=None, metavar="A,B,...",
        help="Class names in label order. Default: classes.txt in the dataset, the 20 VOC "
             "classes for VOC data, else the sorted names found in Annotations/.",
    )(func)


def strict_option(func: F) -> F:
    return click.option(
        "--strict/--lenient", default=False, show_default=True,
        help="Strict: any data problem (malformed XML, missing image, degenerate box...) is an "
             "error. Lenient: problems are reported and the bad item is repaired or left out.",
    )(func)


def force_option(func: F) -> F:
    return click.option("--force", is_flag=True, default=False,
                        help="Rebuild the output even if it is up to date, and discard a "
                             "partial run made with other options.")(func)


def jobs_option(func: F) -> F:
    return click.option("--jobs", "-j", type=click.IntRange(min=1), default=1,
                        show_default=True, help="Parallel worker processes.")(func)


def shard_option(func: F) -> F:
    return click.option("--shard", default=None, metavar="I/N",
                        help="Process only shard I of N (1-based); run every shard (on any "
                             "machines sharing the work dir), and the last one to finish "
                             "merges them.")(func)


def dask_option(func: F) -> F:
    return click.option(
        "--dask", "dask", default=None, metavar="ADDRESS",
        help="Run the per-image (or per-class) work on Dask: 'local' (a LocalCluster of "
             "--jobs worker processes), a scheduler address (tcp://host:8786) or a scheduler "
             "file. Needs the dask extra (pip install 'sppdet[dask]').  [default: no Dask; "
             "--jobs processes on this machine]",
    )(func)


def seed_option(func: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Random seed; same inputs and seed give the same output.")(func)


def device_option(func: F) -> F:
    return click.option("--device", default="auto", show_default=True,
                        help="auto, cpu, cuda or cuda:N (auto takes a GPU when there is one).")(func)


def on_error_option(func: F) -> F:
    return click.option(
        "--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
        help="What a per-image failure (unreadable image, library crash) does to the stage: "
             "fail it at the end, or finish without that image. Failures are always listed.",
    )(func)


def feature_variant_option(func: F) -> F:
    return click.option(
        "--feature-variant", default=None, metavar="NAME",
        help="Which of the backbone's feature caches to read when --features is not given: "
             "the folder name under <work-dir>/features/<dataset>/<backbone>/ (e.g. s688-flip, "
             "made by `sppdet cache-features`).  [default: the only one holding the split]",
    )(func)


def parse_int_list(text: str, param_hint: str, *, what: str = "value") -> tuple[int, ...]:
    """``"480,576"`` -> ``(480, 576)``; a usage error names ``param_hint`` otherwise."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint=param_hint) from None
    if not values:
        raise click.BadParameter(f"give at least one {what}", param_hint=param_hint)
    return values


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """``"a,b,c"`` -> ``("a", "b", "c")``; ``None`` stays ``None``."""
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise click.BadParameter("give at least one class name", param_hint="--classes")
    return names
