"""Per-class SVMs mined over one shared stream of images per worker, so that each image's
window features are computed once for all the classes of the worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone

from sppdet.errors import ConfigError, DataError
from sppdet.training.svm.estimator import HardNegativeSVM
from sppdet.training.svm.inputs import SharedImageNegatives, unpack_negatives
from sppdet.training.svm.miner import HardNegativeMiner
from sppdet.training.svm.per_class import ClassSVMs, log_class_result, split_trainable
from sppdet.training.svm.solver import EmptyClassError

logger = logging.getLogger(__name__)

#: ``factory(class_names)`` returns the shared stream for those classes: an iterable of
#: :class:`SharedImageNegatives` (re-iterable when ``epochs > 1``).
SharedNegativesFactory = Callable[[list[str]], Iterable[SharedImageNegatives]]


@dataclass
class GroupResult:
    """What one worker of :func:`train_class_svms_shared` returns."""

    models: dict[str, HardNegativeSVM]
    skipped: dict[str, str]
    seconds: float
    stream_stats: dict[str, Any] = field(default_factory=dict)


def _mine_class_group(
    group: list[str],
    estimator: HardNegativeSVM,
    positives_by_class: Mapping[str, np.ndarray],
    difficult_by_class: Mapping[str, np.ndarray] | None,
    negatives_factory: SharedNegativesFactory,
    feature_scale: float,
) -> GroupResult:
    """Worker of :func:`train_class_svms_shared`: one pass (per epoch) for a group of classes.

    Module-level so that joblib can pickle it.
    """
    start = time.perf_counter()
    miners: dict[str, HardNegativeMiner] = {}
    skipped: dict[str, str] = {}
    for name in group:
        difficult = None if difficult_by_class is None else difficult_by_class.get(name)
        try:
            miners[name] = HardNegativeMiner(
                clone(estimator), positives_by_class[name], difficult=difficult,
                feature_scale=feature_scale,
            )
        except EmptyClassError as error:
            skipped[name] = str(error)
    stream: Iterable[SharedImageNegatives] = []
    if miners:
        stream = negatives_factory(list(miners))
        if estimator.epochs > 1 and iter(stream) is stream:
            raise ConfigError(
                f"epochs={estimator.epochs} needs a re-iterable shared stream, got a one-shot "
                "iterator"
            )
        dims = {miner.dim for miner in miners.values()}
        dim = dims.pop() if len(dims) == 1 else None
        if dim is None:
            raise DataError("the positives of the classes have different feature widths")
        for _ in range(estimator.epochs):
            for item in stream:
                _feed_miners(miners, item, dim, feature_scale)
            for miner in miners.values():
                miner.end_pass()
    models: dict[str, HardNegativeSVM] = {}
    for name, miner in miners.items():
        try:
            models[name] = miner.finish()
        except EmptyClassError as error:
            skipped[name] = str(error)
    stats = getattr(stream, "stats", None)
    return GroupResult(models=models, skipped=skipped, seconds=time.perf_counter() - start,
                       stream_stats=dict(stats) if stats else {})


def _feed_miners(
    miners: Mapping[str, HardNegativeMiner],
    item: SharedImageNegatives,
    dim: int,
    feature_scale: float,
) -> None:
    """Validate one shared image once, scale its features once, and feed every miner."""
    if not isinstance(item, SharedImageNegatives):
        raise DataError(
            f"the shared stream must yield SharedImageNegatives, got {type(item).__name__}"
        )
    image_id, features, proposal_index = unpack_negatives(
        (item.image_id, item.features, item.proposal_index), dim
    )
    n = features.shape[0]
    scaled_by_dtype: dict[np.dtype, np.ndarray] = {}
    empty_index = np.zeros(0, dtype=np.int64)
    for name, miner in miners.items():
        mask = item.negative_masks.get(name)
        if mask is None:
            miner.add_scaled(image_id, np.zeros((0, dim), miner.dtype), empty_index)
            continue
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (n,):
            raise DataError(
                f"image {image_id!r}: the negative mask of class {name!r} must be bool [{n}], "
                f"got {mask.dtype} {mask.shape}"
            )
        scaled = scaled_by_dtype.get(miner.dtype)
        if scaled is None:
            scaled = (features * feature_scale).astype(miner.dtype, copy=False)
            scaled_by_dtype[miner.dtype] = scaled
        miner.add_scaled(image_id, scaled, proposal_index,
                         None if mask.all() else np.flatnonzero(mask))


def train_class_svms_shared(
    classes: Sequence[str],
    positives_by_class: Mapping[str, np.ndarray],
    negatives_factory: SharedNegativesFactory,
    *,
    estimator: HardNegativeSVM | None = None,
    difficult_by_class: Mapping[str, np.ndarray] | None = None,
    feature_scale: float = 1.0,
    n_jobs: int | None = 1,
    executor: Any = None,
) -> ClassSVMs:
    """Train one :class:`HardNegativeSVM` per class, every class of a worker on one stream.

    :func:`train_class_svms` gives each class its own pass over the images, so each image's
    window features are computed once per class; when computing them (SPP pooling + fc layers)
    costs more than mining, that is K times the work. Here the classes are split into
    ``n_jobs`` groups (round robin); each group runs in one worker that makes one pass over
    the images per epoch, computing each image's features once and feeding every class's
    :class:`HardNegativeMiner` (the released code's loop: images outside, classes inside).
    Features are computed ``n_jobs`` times in all. Each class sees the same negatives in the
    same order as with :func:`train_class_svms`, so the models are the same.

    Args:
        classes: class names.
        positives_by_class: class -> ``[P, D]`` raw features of its ground-truth boxes; a
            class missing here or with 0 rows is skipped with a warning.
        negatives_factory: ``negatives_factory(class_names)`` returns the shared stream of
            :class:`SharedImageNegatives` for those classes; called inside the worker, so it
            must be picklable for ``n_jobs > 1``. If the returned iterable has a ``stats``
            attribute (a dict, e.g. feature timings), it is returned in
            ``ClassSVMs.stream_stats``.
        estimator: the settings, as an unfitted :class:`HardNegativeSVM`; None for defaults.
        difficult_by_class: class -> ``[P]`` bool difficult flags of its positives.
        feature_scale: factor applied to all features.
        n_jobs: worker processes (at most one per trainable class); 1 runs in this process.
        executor: runs the groups (a :class:`sppdet.parallel.executors.Executor`, e.g. a Dask
            cluster) instead of joblib's ``n_jobs`` processes.

    Returns:
        :class:`ClassSVMs`, with ``stream_stats`` (one dict per worker) and ``worker_seconds``.
    """
    trainable, skipped = split_trainable(classes, positives_by_class)
    estimator = HardNegativeSVM() if estimator is None else estimator
    workers = max(1, min(int(n_jobs or 1), len(trainable)))
    groups = [trainable[i::workers] for i in range(workers)] if trainable else []
    arguments = [
        (
            group, estimator, {name: positives_by_class[name] for name in group},
            None if difficult_by_class is None
            else {n: difficult_by_class[n] for n in group if n in difficult_by_class},
            negatives_factory, feature_scale,
        )
        for group in groups
    ]
    if len(arguments) <= 1:
        results = [_mine_class_group(*args) for args in arguments]
    elif executor is not None:
        results = list(executor.imap(_mine_class_group, arguments))
    else:
        results = Parallel(n_jobs=len(arguments))(
            delayed(_mine_class_group)(*args) for args in arguments
        )
    models: dict[str, HardNegativeSVM] = {}
    for result in results:
        models.update(result.models)
        for name, reason in result.skipped.items():
            skipped[name] = reason
            logger.warning("class %r skipped: %s", name, reason)
    for name, model in models.items():
        log_class_result(name, model)
    return ClassSVMs.in_class_order(classes, models, skipped, feature_scale,
                                    stream_stats=[r.stream_stats for r in results],
                                    worker_seconds=[r.seconds for r in results])
