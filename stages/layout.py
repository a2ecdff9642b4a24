"""Where each stage's artifacts live inside the work dir (the library knows nothing of this).

```
<work>/proposals/<dataset-tag>/<split>.<method>.h5
<work>/features/<dataset-tag>/<backbone>/<variant>/<split>.h5
<work>/models/<model-name>/{fc.pt, svm.npz, bbox_reg.npz}
<work>/detections/<model-name>/<dataset-tag>/<split>.h5 (+ comp4/)
<work>/eval/<model-name>/<dataset-tag>/<split>/{report.json, report.md, pr_*.png}
```

``<dataset-tag>`` is the dataset folder's name plus a short hash of its absolute path, so two
datasets that share a folder name (two copies of ``VOC2007``) never share artifacts.
``<variant>`` names what changes a feature cache's maps besides the backbone (scales, mirroring,
weights file; :func:`feature_variant`), so caches of one backbone made with other settings sit
side by side instead of replacing each other.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from sppdet.io.records import record_path
from sppdet.errors import YOUR_CHOICE, ArtifactMissingError, ConfigError, Remedy

FEATURES_FILE_SUFFIX = ".h5"
#: Hex digits of the weights file's SHA-256 in a variant name (enough to tell files apart).
WEIGHTS_DIGEST_CHARS = 8


def dataset_tag(dataset: str | Path) -> str:
    """``<folder name>-<6 hex of the absolute path's SHA-1>``, e.g. ``bccd-3f2a9c``."""
    root = Path(dataset).resolve()
    # os.fsencode: a folder name that is not UTF-8 hashes by its bytes (and shows as U+FFFD)
    name = os.fsencode(root.name).decode("utf-8", "replace")
    return f"{name}-{hashlib.sha1(os.fsencode(str(root))).hexdigest()[:6]}"


def proposals_path(work_dir: Path, dataset: str | Path, split: str, method: str) -> Path:
    return Path(work_dir) / "proposals" / dataset_tag(dataset) / f"{split}.{method}.h5"


def feature_variant(scales: Sequence[int], flip: bool, weights_sha256: str | None = None) -> str:
    """The folder name of a feature cache's settings, e.g. ``s480-576-688-flip-w1a2b3c4d``.

    Args:
        scales: shorter image sides in pixels, in the order the cache records them.
        flip: whether the cache holds the mirrored images too.
        weights_sha256: hex SHA-256 of the weights file given to the backbone, or None for
            its own weights (packaged pretrained ones or the seeded random init; the seed is
            not in the name: one seed per work dir is the norm, and the record catches another).

    dtype and compression are left out on purpose: they change how the maps are stored, not
    what they are (lzf/gzip/zstd are lossless; float16 is the storage of the same float32
    maps), so a cache rebuilt with another one replaces its folder's file, which is what a user
    who switches the storage wants; the record still tells them apart.

    Raises:
        ConfigError: no scales, a scale that is not a positive integer, or a digest that is
            not hex.
    """
    if not scales or any(isinstance(s, bool) or int(s) != s or s <= 0 for s in scales):
        raise ConfigError(f"a feature cache needs one or more positive integer scales, got "
                          f"{list(scales)}")
    parts = ["s" + "-".join(str(int(s)) for s in scales)]
    if flip:
        parts.append("flip")
    if weights_sha256 is not None:
        digest = weights_sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{%d,}" % WEIGHTS_DIGEST_CHARS, digest):
            raise ConfigError(f"expected a hex SHA-256 of the weights file, got "
                              f"{weights_sha256!r}")
        parts.append("w" + digest[:WEIGHTS_DIGEST_CHARS])
    return "-".join(parts)


def features_dir(work_dir: Path, dataset: str | Path, backbone: str) -> Path:
    """The folder holding every variant's caches of one backbone on one dataset."""
    return Path(work_dir) / "features" / dataset_tag(dataset) / backbone


def features_path(work_dir: Path, dataset: str | Path, split: str, backbone: str,
                  variant: str) -> Path:
    """``<work>/features/<dataset-tag>/<backbone>/<variant>/<split>.h5``."""
    return features_dir(work_dir, dataset, backbone) / variant / f"{split}{FEATURES_FILE_SUFFIX}"


def _is_finished(path: Path) -> bool:
    return path.is_file() and record_path(path).is_file()


def find_features(work_dir: Path, dataset: str | Path, split: str, backbone: str,
                  variant: str | None = None, *, preferred: Sequence[str] = ()) -> Path:
    """The finished feature cache of ``split`` made with ``backbone`` (and ``variant``).

    Without ``variant`` the cache is found among the variant folders: the one holding a
    finished ``<split>.h5`` (file and record), or, where several do, the first of
    ``preferred`` (the variants of the cache a model was fine-tuned on) among them.

    Raises:
        ArtifactMissingError: no finished cache (of that variant); the message says which
            command makes it and lists the variants cached for the split.
        ConfigError: several variants hold one, none was chosen and none of ``preferred`` is
            among them; the message lists them.
    """
    folder = features_dir(work_dir, dataset, backbone)
    name = f"{split}{FEATURES_FILE_SUFFIX}"
    # a variant holding only <split>.h5.parts is an unfinished cache too
    variants = sorted({p.parent.name for pattern in (name, name + ".parts")
                       for p in folder.glob(f"*/{pattern}")})
    finished = [v for v in variants if _is_finished(folder / v / name)]
    unfinished = [v for v in variants if v not in finished]

    def make(purpose: str, alternative: str = "") -> Remedy:
        return Remedy.rerun("cache-features", str(dataset), verb="run", purpose=purpose,
                            alternative=alternative, split=split, backbone=backbone)

    note = (f" (unfinished: {', '.join(unfinished)}; rerun the cache-features command that "
            "started it to resume)" if unfinished else "")
    if variant is not None:
        path = folder / variant / name
        if _is_finished(path):
            return path
        cached = ", ".join(finished) if finished else "none"
        raise ArtifactMissingError(
            f"no finished {backbone} feature cache of split '{split}' in variant '{variant}' "
            f"({path}); variants cached for this split: {cached}{note}",
            remedy=make(f" with the settings of '{variant}'", alternative="pick one of them"))
    if not finished:
        raise ArtifactMissingError(
            f"no {backbone} feature cache of split '{split}' in {folder}{note}",
            remedy=make(" first"))
    for choice in preferred if len(finished) > 1 else ():
        if choice in finished:
            return folder / choice / name
    if len(finished) > 1:
        raise ConfigError(
            f"{len(finished)} {backbone} feature caches of split '{split}' in {folder}: "
            f"{', '.join(finished)}",
            remedy=Remedy.rerun(verb="choose one", variant=YOUR_CHOICE, otherwise=Remedy.rerun(
                verb="give the file", features=YOUR_CHOICE)))
    return folder / finished[0] / name


def locate_features(work_dir: Path, dataset: str | Path, features: str | Path
                    ) -> tuple[str, str] | None:
    """``(backbone, variant)`` of a feature cache lying in the work-dir layout, else None.

    Lets a command given one split's cache find another split's in the same variant.
    """
    features = Path(os.path.abspath(features))
    root = Path(work_dir).resolve() / "features" / dataset_tag(dataset)
    variant_dir = features.parent.resolve()
    if variant_dir.parent.parent != root or features.suffix != FEATURES_FILE_SUFFIX:
        return None
    return variant_dir.parent.name, variant_dir.name


def model_dir(work_dir: Path, name: str) -> Path:
    return Path(work_dir) / "models" / name


def detections_path(work_dir: Path, model: str, dataset: str | Path, split: str) -> Path:
    return Path(work_dir) / "detections" / model / dataset_tag(dataset) / f"{split}.h5"


def eval_dir(work_dir: Path, model: str, dataset: str | Path, split: str) -> Path:
    return Path(work_dir) / "eval" / model / dataset_tag(dataset) / split


def log_path(artifact: Path) -> Path:
    """The log file written next to an artifact while its stage runs."""
    return artifact.with_name(artifact.name + ".log")


def detection_images_dir(work_dir: Path, model: str) -> Path:
    """Where ``detect`` on image files draws its pictures: ``<work>/detections/<model>/images``."""
    return Path(work_dir) / "detections" / model / "images"
