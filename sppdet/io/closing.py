"""A base for objects that hold an open file or lock: ``with obj:`` closes it on exit."""

from __future__ import annotations

from typing import TypeVar

_Self = TypeVar("_Self", bound="Closing")


class Closing:
    """``with obj: ...`` returns ``obj`` and calls ``obj.close()`` on exit, even on an error
    (what :func:`contextlib.closing` does for one block). Subclasses define :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
