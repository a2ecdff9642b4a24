"""The ``sppdet`` command line: a Click group whose commands call ``sppdet.stages``.

Exit codes: usage errors (an unknown option, a bad value, options that do not go together)
exit 2, Click's rule; so does a library :class:`~sppdet.errors.ParameterError`, which names
the parameter that the command line shows as its option. Other library errors
(:class:`~sppdet.errors.SppdetError`: data, artifacts, config files) and errors of the user's
environment (a read-only or full file system, a permission: the file and the errno are named)
print as ``Error: ...`` and exit 1; an error's remedy (what to rerun, with which settings) is
rendered with this command line's options (:mod:`cli.remedies`). A traceback is printed only
with ``--debug``.

Importing this package is instant: the command modules import only Click and the torch-free
parameter declarations (:mod:`sppdet.stages.params`); the stages and the library load inside
the command that runs. ``tests/cli/test_lazy_imports.py`` holds them to it.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import click

from sppdet import __version__
from sppdet.errors import ParameterError, SppdetError

from .context import Settings
from .remedies import error_message

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True,
                    "max_content_width": 100}


class SppdetGroup(click.Group):
    """A group that turns sppdet's errors into clean ``Error:`` messages."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ParameterError as exc:
            option = _option_of(ctx, exc.param)
            if _debug(ctx):
                traceback.print_exc()
            if option is None:
                raise click.ClickException(error_message(ctx, exc)) from exc
            raise click.BadParameter(error_message(ctx, exc), param=option) from exc
        except SppdetError as exc:
            if _debug(ctx):
                traceback.print_exc()
            raise click.ClickException(error_message(ctx, exc)) from exc
        except KeyboardInterrupt:
            raise click.Abort() from None
        except OSError as exc:
            # a read-only, full or forbidden file system is the user's environment, not a bug
            from sppdet.io.atomic import environment_error

            error = environment_error(exc)
            if error is None:
                if _debug(ctx):
                    raise
                raise _internal_error(exc) from exc
            if _debug(ctx):
                traceback.print_exc()
            raise click.ClickException(str(error)) from exc
        except MemoryError as exc:
            if _debug(ctx):
                traceback.print_exc()
            raise click.ClickException("out of memory; try fewer --jobs, fewer scales or a "
                                       "smaller batch") from exc
        except Exception as exc:
            if _debug(ctx):
                raise
            raise _internal_error(exc) from exc


def _internal_error(exc: BaseException) -> click.ClickException:
    return click.ClickException(
        f"internal error ({type(exc).__name__}: {exc}). This is a bug in sppdet; rerun "
        "with --debug for the traceback and report it.")


def _option_of(ctx: click.Context, name: str) -> click.Parameter | None:
    """The running command's parameter called ``name`` (a library parameter's name), if any."""
    command = ctx.command.get_command(ctx, ctx.invoked_subcommand or "") \
        if isinstance(ctx.command, click.Group) else None
    for param in (command.params if command else []):
        if param.name == name:
            return param
    return None


def _debug(ctx: click.Context) -> bool:
    settings = ctx.find_object(Settings)
    return bool(settings and settings.debug)


@click.group(cls=SppdetGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="sppdet")
@click.option("--work-dir", "-w", type=click.Path(file_okay=False, path_type=Path),
              default=Path("sppdet-work"), envvar="SPPDET_WORK_DIR",
              help="Folder for every artifact (proposals, features, models, detections, "
                   "reports). Also SPPDET_WORK_DIR.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("--verbose", "-v", count=True, show_default=False, help="More logging (debug).")
@click.option("--debug", is_flag=True, help="Print tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, work_dir: Path, quiet: bool, verbose: int, debug: bool) -> None:
    """sppdet: SPP-net object detection (He et al., 2014), one command per pipeline stage.

    Each command reads files and writes files under --work-dir, with a record of how each
    output was made; rerun a stage with other options and only what changed is rebuilt.
    """
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose cannot be used together")
    from sppdet.progress import configure_logging

    ctx.obj = Settings(work_dir=work_dir, quiet=quiet, verbose=verbose, debug=debug)
    configure_logging(verbosity=verbose, quiet=quiet)


def _register() -> None:
    """Add the commands of every ``cli/commands_*.py`` module (each lists them in COMMANDS)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("commands_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for command in module.COMMANDS:
                cli.add_command(command)


_register()

main = cli

__all__ = ["cli", "main"]
