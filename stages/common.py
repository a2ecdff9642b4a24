"""Pieces every stage shares: dataset identity, per-image parallel loops, summaries."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppdet.io.item_store import ItemStore
from sppdet.data.voc import VOCDataset
from sppdet.parallel.executors import Executor, local_executor
from sppdet.progress import get_logger, progress

log = get_logger("stages")


def dataset_params(data: VOCDataset) -> dict[str, Any]:
    """What identifies a dataset split in a record: its path, split, classes and a fingerprint.

    The fingerprint hashes the split's ids, every annotation file's bytes and every image
    file's size, so editing an annotation makes downstream artifacts stale without hashing
    gigabytes of pixels.
    """
    digest = hashlib.sha256()
    for ann in data:
        digest.update(ann.image_id.encode())
        xml = data.root / "Annotations" / f"{ann.image_id}.xml"
        digest.update(xml.read_bytes())
        digest.update(str(ann.image_path.stat().st_size).encode())
    return {
        "dataset": str(data.root.resolve()),
        "split": data.split,
        "classes": list(data.classes),
        "n_images": len(data),
        "fingerprint": digest.hexdigest()[:16],
    }


@dataclass
class LoopStats:
    """What a per-image loop did."""

    done: int = 0
    skipped_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    per_item_seconds: list[float] = field(default_factory=list)
    engine: str = ""
    reruns: int = 0

    @property
    def seconds_per_item(self) -> float:
        return statistics.fmean(self.per_item_seconds) if self.per_item_seconds else 0.0


def run_per_item(store: ItemStore, item_ids: Sequence[str],
                 work: Callable[..., tuple[dict, dict]], args: Callable[[str], tuple],
                 *, jobs: int = 1, desc: str = "", errors: tuple[type[BaseException], ...] = (),
                 on_result: Callable[[str, dict, dict], None] | None = None,
                 executor: Executor | None = None) -> LoopStats:
    """Run ``work(*args(item_id))`` for every pending item and commit each result to ``store``.

    Workers only compute; this process alone writes (one writer per file). With ``jobs > 1``
    the work runs in joblib's loky processes (fresh interpreters, so OpenCV's and PyTorch's
    thread pools are never forked), and results are committed in completion order.

    Args:
        store: the per-item output.
        item_ids: every item of this run (this shard); done ones are skipped.
        work: a module-level function returning ``(arrays, attrs)`` for one item; it raises
            one of ``errors`` for a per-item failure (recorded, the loop goes on).
        args: builds the work function's arguments for an item id (small, picklable values).
        jobs: worker processes.
        desc: progress-bar label.
        errors: exception types recorded as per-item failures.
        on_result: called in this process with ``(item_id, arrays, attrs)`` after a commit.
        executor: where the work runs (e.g. a Dask cluster); default: ``jobs`` (this process
            for 1, joblib's processes otherwise).
    """
    pending = store.pending(item_ids)
    stats = LoopStats(skipped_done=len(item_ids) - len(pending))
    start = time.perf_counter()
    executor = executor or local_executor(jobs)
    if pending:
        results = executor.imap_unordered(_timed, ((work, i, args(i), errors) for i in pending))
        for item_id, arrays, attrs, seconds in progress(results, total=len(pending), desc=desc):
            if arrays is None:
                store.write_failure(item_id, attrs)
                stats.failed[item_id] = attrs
                log.warning("%s: failed: %s", item_id, attrs)
                continue
            store.write(item_id, arrays, attrs)
            stats.done += 1
            stats.per_item_seconds.append(seconds)
            if on_result is not None:
                on_result(item_id, arrays, attrs)
        stats.reruns = executor.last_run.reruns
    stats.engine = executor.description
    stats.seconds = time.perf_counter() - start
    return stats


def _timed(work: Callable[..., tuple[dict, dict]], item_id: str, args: tuple,
           errors: tuple[type[BaseException], ...]) -> tuple[str, Any, Any, float]:
    start = time.perf_counter()
    try:
        arrays, attrs = work(*args)
    except errors as exc:  # a per-item failure: reported by the caller, never silent
        return item_id, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start
    return item_id, arrays, attrs, time.perf_counter() - start


def engine_line(engine: str, reruns: int) -> str:
    """The summary line that names where the work ran and what was computed again."""
    again = f"; {reruns} task(s) computed again after their worker was lost" if reruns else ""
    return f"  ran on {engine}{again}"


@dataclass(kw_only=True)
class ClassStats:
    """One class of a :class:`PerClassSummary`: its name, and why it was not trained (None:
    it was)."""

    name: str
    skipped: str | None = None


@dataclass(kw_only=True)
class PerClassSummary:
    """What a stage that trains one model per class did (train-svm, train-bbox-reg): the
    fields and summary lines they share.

    ``classes`` hold the stats of each class (a :class:`ClassStats`).
    """

    path: Path
    classes: list[Any] = field(default_factory=list)
    feature_scale: float = 0.0
    images: int = 0
    proposals: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    up_to_date: bool = False

    def head_line(self, what: str, layer: str) -> str:
        """``"<what> on <layer> features for 3 of 4 classes -> <path>"``."""
        trained = sum(c.skipped is None for c in self.classes)
        return (f"{what} on {layer} features for {trained} of {len(self.classes)} classes -> "
                f"{self.path}")

    def class_table(self, header: str, cells: Callable[[Any], str],
                    first_cell: Callable[[Any], str]) -> list[str]:
        """A header row, then one row per class: ``cells(c)`` after its name; a skipped class
        keeps its first column ``first_cell(c)`` and says why."""
        width = max([len("class")] + [len(c.name) for c in self.classes])
        lines = [f"  {'class':<{width}}  {header}"]
        for c in self.classes:
            row = cells(c) if c.skipped is None else f"{first_cell(c)}  skipped: {c.skipped}"
            lines.append(f"  {c.name:<{width}}  {row}")
        return lines

    def inputs_line(self, windows: str) -> str:
        """The feature scale and what was read; ``windows`` says what windows were used."""
        return (f"  feature scale {self.feature_scale:.4g} (mean norm 20); {self.images} "
                f"images, {self.proposals} proposals, {windows}")

    def skipped_line(self, consequence: str) -> list[str]:
        """``["  2 class(es) <consequence>: a, b"]`` for the skipped classes; none: ``[]``."""
        skipped = [c.name for c in self.classes if c.skipped is not None]
        if not skipped:
            return []
        return [f"  {len(skipped)} class(es) {consequence}: " + ", ".join(skipped)]

    def record_fields(self) -> dict[str, Any]:
        """The shared part of the record's summary."""
        return {"classes": {c.name: {k: v for k, v in vars(c).items() if k != "name"}
                            for c in self.classes},
                "feature_scale": self.feature_scale, "images": self.images,
                "proposals": self.proposals, "device": self.device}


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def path_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
