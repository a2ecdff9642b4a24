"""Named fault points, so tests can crash a stage or fill its disk at a chosen moment.

The environment variable ``SPPDET_FAULT="STAGE:POINT[:N][:ACTION]"`` makes the N-th passage
(default: the first) of the named ``POINT`` in a process writing an artifact of ``STAGE``
(``propose``, ``cache-features``, ``detect``, ``finetune``, ``train-svm``...; ``*`` for any)
do ``ACTION``:

- ``kill`` (default): the process sends itself SIGKILL, like a crash, an OOM kill or a power
  cut (nothing is flushed, no ``finally`` runs);
- ``enospc`` / ``erofs``: raise the ``OSError`` that a full disk / a read-only file system
  raises at that write.

Several specs may be given, separated by ``,``. Unset (every normal run), a point costs one
environment lookup (about 0.1 microseconds), nothing measurable next to the write it marks.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from functools import lru_cache

ENV = "SPPDET_FAULT"

#: Every point and where it lies (``STAGE`` is the stage named in the artifact's record).
POINTS: dict[str, str] = {
    "item-write": "a per-image part is written to its temporary file, not yet renamed",
    "item-committed": "a per-image part was renamed into place",
    "artifact-write": "an artifact's data is written to its temporary file, not yet renamed",
    "artifact-renamed": "an artifact's data was renamed into place; its record is not written",
    "record-write": "an artifact's record is written to its temporary file, not yet renamed",
    "artifact-committed": "an artifact and its record are in place",
    "merge-committed": "per-image parts were merged and committed; the parts folder remains",
    "outputs-pending": "detect: detections committed; the VOC result files are not written",
}
ACTIONS = ("kill", "enospc", "erofs")

_passes: Counter[tuple[str, str]] = Counter()


def reset() -> None:
    """Forget how often each point was passed (for tests that set ``SPPDET_FAULT`` in-process)."""
    _passes.clear()


@lru_cache(maxsize=8)
def _parse(spec: str) -> tuple[tuple[str, str, int, str], ...]:
    faults = []
    for part in spec.split(","):
        fields = part.strip().split(":")
        if len(fields) < 2 or fields[1] not in POINTS:
            raise ValueError(f"{ENV}={spec!r}: expected STAGE:POINT[:N][:ACTION] with POINT one "
                             f"of {', '.join(POINTS)}")
        stage, point, rest = fields[0], fields[1], fields[2:]
        count, action = 1, "kill"
        for field in rest:
            if field.isdigit():
                count = int(field)
            elif field in ACTIONS:
                action = field
            else:
                raise ValueError(f"{ENV}={spec!r}: {field!r} is neither a count nor one of "
                                 f"{', '.join(ACTIONS)}")
        faults.append((stage, point, count, action))
    return tuple(faults)


def fault_point(point: str, stage: str, path: str | os.PathLike[str] | None = None) -> None:
    """Mark a point where a test may inject a fault (see the module docstring).

    Args:
        point: a key of :data:`POINTS`.
        stage: the stage writing the artifact.
        path: the file being written (named in an injected ``OSError``).
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    matching = [(count, action) for want_stage, want_point, count, action in _parse(spec)
                if want_point == point and want_stage in ("*", stage)]
    if not matching:
        return
    _passes[(stage, point)] += 1
    for count, action in matching:
        if _passes[(stage, point)] != count:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        code = errno.ENOSPC if action == "enospc" else errno.EROFS
        raise OSError(code, os.strerror(code), None if path is None else str(path))
