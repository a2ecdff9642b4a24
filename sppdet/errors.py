"""sppdet's exceptions.

Every error that a user can cause (bad data, a missing or stale artifact, an option that does
not fit) derives from :class:`SppdetError`. The CLI prints such errors as ``Error: <message>``
and exits with code 1; anything else is a bug and gets a traceback. Messages name the file,
the image id and what to do.

What to do is often "rerun a stage with another setting". The library never spells that as a
command-line flag: the error carries a :class:`Remedy` (the stage and the settings by their
parameter names), ``str(error)`` words it for a library user (``rerun stage 'propose' with
force=True``), and a front end renders it in its own words (the CLI: ``rerun `sppdet propose
--force```).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

#: A remedy's setting whose value is the user's to choose (a path, a name).
YOUR_CHOICE = None


@dataclass(frozen=True)
class Remedy:
    """What fixes an error: (re)run a stage with some settings.

    Attributes:
        stage: the stage to run, by its name (``"propose"``, ``"cache-features"``); None: the
            stage that raised the error (rerun it).
        settings: ``(parameter name, value)`` pairs, by the stage's parameter names
            (``("force", True)``, ``("on_error", "skip")``); a value of :data:`YOUR_CHOICE`
            (None) is the user's to choose (a path, a name).
        args: the stage's positional inputs, as words (``"DATASET"``).
        verb: ``"rerun"`` (an artifact exists) or ``"run"``.
        purpose: appended as is after the command (``" to start over"``, ``", then finetune"``).
        alternative: another fix, said first (``"fix them"`` -> ``"fix them, or rerun ..."``):
            words, or another remedy.
        otherwise: another fix, said last (``"..., or give the file with features=..."``).
    """

    stage: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()
    args: tuple[str, ...] = ()
    verb: str = "rerun"
    purpose: str = ""
    alternative: str | Remedy = ""
    otherwise: str | Remedy = ""

    @classmethod
    def rerun(cls, stage: str | None = None, *args: str, verb: str = "rerun", purpose: str = "",
              alternative: str | Remedy = "", otherwise: str | Remedy = "",
              **settings: Any) -> Remedy:
        """``Remedy.rerun("propose", force=True)``: keyword arguments are the settings."""
        return cls(stage=stage, settings=tuple(settings.items()), args=tuple(args), verb=verb,
                   purpose=purpose, alternative=alternative, otherwise=otherwise)

    def describe(self, command: Callable[[Remedy], str | None] | None = None) -> str:
        """The remedy in words.

        ``command``: how a front end writes a remedy's command with its settings (e.g.
        ``"`sppdet propose --force`"``, ``"with --force"`` for the running stage), or None
        where it cannot; the library's wording (by stage and parameter names) is used then,
        and without ``command``.
        """
        words = command(self) if command is not None else None
        if words is None:
            settings = ", ".join(f"{name}={'...' if value is YOUR_CHOICE else repr(value)}"
                                 for name, value in self.settings)
            where = f" stage {self.stage!r}" if self.stage else ""
            inputs = f" on {' '.join(self.args)}" if self.args else ""
            words = f"{where}{inputs}{' with ' + settings if settings else ''}"
        else:
            words = f" {words}" if words else ""
        text = f"{self.verb}{words}{self.purpose}"
        before, after = (other.describe(command) if isinstance(other, Remedy) else other
                         for other in (self.alternative, self.otherwise))
        return ", or ".join(part for part in (before, text, after) if part)


class SppdetError(Exception):
    """Base class of every error sppdet reports to a user.

    ``message`` says what is wrong; ``remedy`` (optional) what fixes it. ``str(error)`` is the
    message followed by the remedy in the library's words.
    """

    def __init__(self, message: str = "", *, remedy: Remedy | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return self.worded(None if self.remedy is None else self.remedy.describe())

    def worded(self, remedy: str | None) -> str:
        """The message followed by ``remedy`` (a remedy in some front end's words)."""
        return f"{self.message}; {remedy}" if remedy else self.message


class DataError(SppdetError):
    """A dataset, an image or an annotation is missing, unreadable or malformed."""


class ArtifactError(SppdetError):
    """An artifact is missing, incomplete, locked or was made from other inputs."""


class ArtifactMissingError(ArtifactError):
    """An input artifact does not exist (or has no record, so it never finished)."""


class StaleArtifactError(ArtifactError):
    """An artifact exists but was made with other parameters or other inputs."""


class ArtifactLockedError(ArtifactError):
    """Another run is writing the artifact right now."""


class ConfigError(SppdetError):
    """Options or parameters that are invalid or do not fit together."""


class ModelError(SppdetError):
    """A backbone, a weights file or a trained model cannot be built or loaded."""


class ParameterError(ConfigError):
    """One parameter's value is invalid by itself (a device that is not there, a shard that
    does not exist). ``param`` names the parameter as the library calls it (``"device"``),
    so that a front end can point at its own spelling of it (a command-line option)."""

    def __init__(self, param: str, message: str, *, remedy: Remedy | None = None) -> None:
        super().__init__(message, remedy=remedy)
        self.param = param

    def __reduce__(self) -> tuple[Any, ...]:
        # the default rebuilds from ``args`` alone (the message), which misses ``param``
        return (_parameter_error, (type(self), self.param, self.message), self.__dict__)


class StorageError(SppdetError):
    """The file system refused a write: read-only, no permission, or full.

    It is the user's environment, not a bug: the message names the path and the errno.
    """


class DiskFullError(StorageError):
    """No space left on the device (or the quota is used up) while writing a file."""


def _parameter_error(cls: type[ParameterError], param: str, message: str) -> ParameterError:
    return cls(param, message)
