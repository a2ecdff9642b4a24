"""The skeleton every stage repeats, written once.

A stage builds the record of its output (parameters and inputs), skips the work when the
output is up to date, logs to the output's log file while it works (with one writer at a time:
the output's lock), and writes the output with its record. A per-image stage writes through
an :class:`~sppdet.io.item_store.ItemStore` instead, which holds the lock itself, and its
summary ends with the same lines about failed images and unfinished shards.

Usage, for a stage that writes one file::

    output = StageOutput(out, Record(STAGE, params, inputs=inputs), force=force)
    if output.is_current():
        return Summary(path=out, up_to_date=True)
    with output.writing():
        ...                                  # the work, logged to <out>.log
        output.commit(model.save, summary=summary.to_record())
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sppdet.io.item_store import ItemStore, clean_orphans_if_idle
from sppdet.io.locks import ArtifactLock
from sppdet.io.records import Record, is_up_to_date, write_artifact
from sppdet.progress import log_to_file

from .layout import log_path


class StageOutput:
    """The output artifact of one stage run and its record.

    Args:
        path: the artifact.
        record: the record it will carry (its digest decides whether it is up to date).
        force: redo the work even when the artifact is up to date.
    """

    def __init__(self, path: str | Path, record: Record, *, force: bool = False) -> None:
        self.path = Path(path)
        self.record = record
        self.force = force

    def is_current(self) -> bool:
        """True when the work can be skipped: not forced, and ``path`` is finished with this
        record's digest. What killed runs left of ``path`` (temporaries, merged parts) is
        deleted first, when no run is writing it."""
        clean_orphans_if_idle(self.path)
        return not self.force and is_up_to_date(self.path, self.record)

    @contextlib.contextmanager
    def logging(self) -> Iterator[Path]:
        """Copy every log record to ``<path>.log`` while inside; yields the log file."""
        with log_to_file(log_path(self.path)) as log_file:
            yield log_file

    @contextlib.contextmanager
    def writing(self) -> Iterator[StageOutput]:
        """Hold the artifact's lock (one writer) and log to its log file while inside.

        Raises:
            ArtifactLockedError: another run is writing the artifact.
        """
        with ArtifactLock(self.path, clean=True), self.logging():
            yield self

    def item_store(self, *, shard: tuple[int, int] | None = None) -> ItemStore:
        """The resumable per-image store of the artifact (it holds the lock itself); parts of
        a run with another record are refused unless forced."""
        return ItemStore(self.path, self.record, force=self.force, shard=shard)

    def commit(self, save: Callable[[Path], Any], *,
               summary: Mapping[str, Any] | None = None) -> Path:
        """Write the artifact: ``save(temporary_path)`` writes the data, then it is renamed into
        place and the record (with ``summary``, when given) is written beside it.

        Returns:
            ``path``.
        """
        if summary is not None:
            self.record.summary = dict(summary)
        with write_artifact(self.path, self.record) as tmp:
            save(tmp)
        return self.path


def item_summary_lines(failures: Mapping[str, str], finished: bool) -> list[str]:
    """The last lines of a per-image stage's summary: the images that failed, and whether this
    shard's work waits for other shards before the artifact is merged."""
    lines = []
    if failures:
        lines.append(f"  failures: {len(failures)}")
        lines.extend(f"    {item}: {reason}" for item, reason in failures.items())
    if not finished:
        lines.append("  this shard is done; the artifact is merged when every shard is")
    return lines
