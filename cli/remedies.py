"""A library error's :class:`~sppdet.errors.Remedy` in the command line's words.

The library names a stage and its settings by their parameter names (``force=True``); here
they become the command and its options (``rerun `sppdet propose --force```). The option
of each setting is looked up in the command's own parameters, so a renamed flag renders
correctly; a setting with no option (or a stage with no command) keeps the library's words.
"""

from __future__ import annotations

from typing import Any

import click

from sppdet.errors import YOUR_CHOICE, Remedy, SppdetError


def error_message(ctx: click.Context, error: SppdetError) -> str:
    """``error``'s message with its remedy, if any, rendered for the command line."""
    if error.remedy is None:
        return str(error)
    return error.worded(render_remedy(ctx, error.remedy))


def render_remedy(ctx: click.Context, remedy: Remedy) -> str:
    """``remedy`` as a command line: ``rerun `sppdet propose --force```, ``rerun with
    --on-error skip`` (the running command), ``run `sppdet cache-features DATASET --split
    val```; the library's wording where a setting has no option in that command."""
    return remedy.describe(lambda one: _command_words(ctx, one))


def _command_words(ctx: click.Context, remedy: Remedy) -> str | None:
    """The command and options of ``remedy`` alone (not its alternatives); None where the
    command line has no such command or option."""
    command = _command(ctx, remedy.stage)
    if command is None:
        return None
    options = []
    for name, value in remedy.settings:
        option = _option(command, name)
        text = None if option is None else _option_text(option, value)
        if text is None:
            return None
        options.append(text)
    if remedy.stage is None:
        return f"with {' '.join(options)}" if options else ""
    return f"`{' '.join(['sppdet', remedy.stage, *remedy.args, *options])}`"


def _command(ctx: click.Context, stage: str | None) -> click.Command | None:
    """The command of ``stage`` (None: the running subcommand)."""
    root = ctx.find_root()
    group = root.command
    if not isinstance(group, click.Group):
        return None
    name = stage if stage is not None else root.invoked_subcommand
    return group.get_command(root, name) if name else None


#: Library parameter names that the command line spells otherwise.
OPTION_NAMES = {"variant": "feature_variant"}


def _option(command: click.Command, name: str) -> click.Option | None:
    """``command``'s option for library parameter ``name``."""
    name = OPTION_NAMES.get(name, name)
    for param in command.params:
        if isinstance(param, click.Option) and param.name == name:
            return param
    return None


def _option_text(option: click.Option, value: Any) -> str | None:
    """``--force``, ``--no-bbox-reg``, ``--on-error skip``, ``--edge-model FILE``; None for a
    flag that cannot be turned off."""
    long = max(option.opts, key=len)
    if option.is_flag:
        if value is False:
            return max(option.secondary_opts, key=len) if option.secondary_opts else None
        return long
    if value is YOUR_CHOICE:
        return f"{long} {_placeholder(option)}"
    if isinstance(value, (tuple, list)):
        return f"{long} {','.join(str(v) for v in value)}"
    return f"{long} {value}"


def _placeholder(option: click.Option) -> str:
    """What the user fills in: the option's metavar, FILE / PATH for paths, else NAME."""
    if option.metavar:
        return option.metavar
    if isinstance(option.type, click.Path):
        return "FILE" if not option.type.dir_okay else "PATH"
    return "NAME"


#: What rebuilds an output that is up to date.
REBUILD = Remedy.rerun(purpose=" to rebuild it", force=True)


def summary_text(summary: Any) -> str:
    """A stage summary's ``to_text()`` in the command line's words: the remedies it words
    (``summary.remedies``) with this command line's options, and, when the output was up to
    date (``summary.up_to_date``), its "up to date" line says how to rebuild it."""
    ctx = click.get_current_context()
    text = summary.to_text()
    for remedy in getattr(summary, "remedies", ()):  # worded by the library: word them here
        text = text.replace(remedy.describe(), render_remedy(ctx, remedy))
    if not getattr(summary, "up_to_date", False):
        return text
    words = _command_words(ctx, REBUILD)
    if words is None:  # this command cannot rebuild it
        return text
    lines = text.split("\n")
    at = next((i for i, line in enumerate(lines) if "up to date" in line), 0)
    lines[at] += f" ({REBUILD.describe(lambda _: words)})"
    return "\n".join(lines)
