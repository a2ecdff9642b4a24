"""Options that several commands share, each as one decorator (sqlite-utils style), and the
Click types that parse their values.

Nothing here imports torch, numpy or any other heavy library: every command module is loaded
for ``sppdet --help``. Defaults and choices come from :mod:`sppdet.stages.params` (and the
library's torch-free config modules); a value that does not parse is a usage error (exit 2).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from sppdet.devices import check_device_name
from sppdet.errors import ConfigError, ParameterError
from sppdet.stages.params import (BACKBONE_NAMES, ON_ERROR, PROPOSAL_SOURCES, field_default,
                                  rules)

F = TypeVar("F", bound=Callable[..., Any])


# --- the option class ----------------------------------------------------------------------------


class Option(click.Option):
    """A Click option whose ``show_default`` text is shown as it is, ``[default: text]``
    (Click puts a text in parentheses, which reads badly for ``ss-fast``)."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str) and "default" in extra:
            extra["default"] = self.show_default
        return extra


def option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """:func:`click.option` with :class:`Option`: use it for every option of a command."""
    return click.option(*decls, cls=Option, **kwargs)


# --- types ---------------------------------------------------------------------------------------


class IntListType(click.ParamType):
    """``"480,576"`` -> ``(480, 576)``: comma-separated integers, at least one."""

    name = "N1,N2,..."

    def __init__(self, what: str = "value", min: int | None = None) -> None:
        self.what = what
        self.min = min

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(int(part) for part in str(value).split(",") if part.strip())
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)
        if not values:
            self.fail(f"give at least one {self.what}", param, ctx)
        if self.min is not None and min(values) < self.min:
            self.fail(f"expected integers >= {self.min}, got {value!r}", param, ctx)
        return values


class ChoiceListType(click.ParamType):
    """``"crop,full"`` -> ``("crop", "full")``: comma-separated names from ``choices``."""

    name = "A,B,..."

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = tuple(choices)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(part.strip() for part in str(value).split(",") if part.strip())
        bad = [name for name in names if name not in self.choices]
        if bad or not names:
            self.fail(f"choose one or more of {', '.join(self.choices)}, comma-separated; got "
                      f"{value!r}", param, ctx)
        return names


class ShardType(click.ParamType):
    """``"2/4"`` -> ``(2, 4)``: shard I of N, 1-based."""

    name = "I/N"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        from sppdet.io.item_store import parse_shard  # with h5py: only when a shard is given

        try:
            shard = parse_shard(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        assert shard is not None
        return shard


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked without torch; whether the device is
    there is checked when a stage takes it)."""

    name = "DEVICE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return check_device_name(str(value))
        except ParameterError as exc:
            self.fail(str(exc), param, ctx)


def click_type(hint: Any, rule: Mapping[str, Any]) -> click.ParamType | type | None:
    """The Click type of a parameter declared with type ``hint`` and checking ``rule``
    (:mod:`sppdet.stages.params`): a choice, a range, or the plain type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        if rule.get("choices") is not None:
            return ChoiceListType(tuple(str(c) for c in rule["choices"]))
        return IntListType(min=rule.get("min"))
    if rule.get("choices") is not None:
        return click.Choice([str(c) for c in rule["choices"]])
    if hint in (int, float) and (rule.get("min") is not None or rule.get("max") is not None):
        kind = click.IntRange if hint is int else click.FloatRange
        kwargs = {"min": rule.get("min"), "max": rule.get("max")}
        if hint is float:
            kwargs.update(min_open=bool(rule.get("min_open")),
                          max_open=bool(rule.get("max_open")))
        return kind(**kwargs)
    if hint in (int, float, str):
        return hint
    return None


def param_option(cls: type, name: str, *decls: str, help: str, **overrides: Any
                 ) -> Callable[[F], F]:
    """An option whose default, type and checks are field ``name`` of dataclass ``cls``.

    ``decls`` are the option's names (``"--flip/--no-flip"`` for a bool field); ``overrides``
    go to :func:`click.option` as they are (e.g. ``default=None`` with a ``show_default``
    text, for an option whose unset value means "work it out").
    """
    hint = typing.get_type_hints(cls)[name]
    default = field_default(cls, name)
    kwargs: dict[str, Any] = {"default": default, "show_default": True, "help": help}
    if hint is not bool:
        kwargs["type"] = click_type(hint, rules(cls, name))
    if isinstance(default, tuple):
        kwargs["default"] = ",".join(map(str, default))
    kwargs.update(overrides)
    names = decls if any(d.isidentifier() for d in decls) else (*decls, name)
    return option(*names, **kwargs)


# --- shared options ----------------------------------------------------------------------------


def dataset_argument(func: F) -> F:
    """DATASET: a VOC-layout dataset folder."""
    return click.argument(
        "dataset", type=click.Path(exists=True, file_okay=False, path_type=str),
    )(func)


def split_option(default: str, *, help_text: str = "Image split to read "
                 "(ImageSets/Main/<split>.txt).") -> Callable[[F], F]:
    def decorator(func: F) -> F:
        return option("--split", "-s", default=default, show_default=True,
                      help=help_text)(func)
    return decorator


def classes_option(func: F) -> F:
    return option(
        "--classes", default=None, metavar="A,B,...",
        show_default="classes.txt in the dataset, the 20 VOC classes for VOC data, else the "
                     "sorted names found in Annotations/",
        help="Class names in label order.",
    )(func)


def strict_option(func: F) -> F:
    return option(
        "--strict/--no-strict", default=False, show_default=True,
        help="Strict: any data problem (malformed XML, missing image, degenerate box...) is an "
             "error. Otherwise problems are reported and the bad item is repaired or left out.",
    )(func)


def force_option(func: F) -> F:
    return option("--force", is_flag=True, default=False,
                  help="Rebuild the output even if it is up to date, and discard a "
                       "partial run made with other options.")(func)


def jobs_option(func: F) -> F:
    return option("--jobs", "-j", type=click.IntRange(min=1), default=1,
                  show_default=True, help="Parallel worker processes.")(func)


def shard_option(func: F) -> F:
    return option("--shard", type=ShardType(), default=None,
                  help="Process only shard I of N (1-based); run every shard (on any "
                       "machines sharing the work dir), and the last one to finish "
                       "merges them.")(func)


def dask_option(func: F) -> F:
    return option("--dask", default=None, metavar="ADDRESS",
                  show_default="no Dask; --jobs processes on this machine",
                  help="Run the per-image (or per-class) work on Dask: 'local' (a LocalCluster "
                       "of --jobs worker processes), a scheduler address (tcp://host:8786) or "
                       "a scheduler file. Needs the dask extra (pip install "
                       "'sppdet[dask]').")(func)


def seed_option(func: F) -> F:
    return option("--seed", type=int, default=0, show_default=True,
                  help="Random seed; same inputs and seed give the same output.")(func)


def device_option(func: F) -> F:
    return option("--device", type=DeviceType(), default="auto", show_default=True,
                  help="auto, cpu, cuda or cuda:N (auto takes a GPU when there is "
                       "one).")(func)


def on_error_option(func: F) -> F:
    return option(
        "--on-error", type=click.Choice(ON_ERROR), default=ON_ERROR[0], show_default=True,
        help="What a per-image failure (unreadable image, library crash) does to the stage: "
             "fail it at the end, or finish without that image. Failures are always listed.",
    )(func)


def backbone_choice() -> click.Choice:
    return click.Choice(BACKBONE_NAMES)


def method_choice() -> click.Choice:
    return click.Choice(PROPOSAL_SOURCES)


def feature_variant_option(func: F) -> F:
    return option(
        "--feature-variant", default=None, metavar="NAME",
        show_default="the only one holding the split",
        help="Which of the backbone's feature caches to read when --features is not given: "
             "the folder name under <work-dir>/features/<dataset>/<backbone>/ (e.g. s688-flip, "
             "made by `sppdet cache-features`).",
    )(func)


def exclusive(**given: object) -> None:
    """A usage error when two options that decide the same thing are both given."""
    (first, a), (second, b) = given.items()
    if a is not None and b is not None:
        raise click.UsageError(f"give either --{first.replace('_', '-')} or "
                               f"--{second.replace('_', '-')}, not both")


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """``"a,b,c"`` -> ``("a", "b", "c")``; ``None`` stays ``None``."""
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise click.BadParameter("give at least one class name", param_hint="'--classes'")
    return names
