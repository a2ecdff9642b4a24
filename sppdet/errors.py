"""sppdet's exceptions.

Every error that a user can cause (bad data, a missing or stale artifact, an option that does
not fit) derives from :class:`SppdetError`. The CLI prints such errors as ``Error: <message>``
and exits with code 1; anything else is a bug and gets a traceback. Messages name the file,
the image id and what to do.
"""

from __future__ import annotations


class SppdetError(Exception):
    """Base class of every error sppdet reports to a user."""


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

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class StorageError(SppdetError):
    """The file system refused a write: read-only, no permission, or full.

    It is the user's environment, not a bug: the message names the path and the errno.
    """


class DiskFullError(StorageError):
    """No space left on the device (or the quota is used up) while writing a file."""
