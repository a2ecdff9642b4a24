"""Where each stage's artifacts live inside the work dir (the library knows nothing of this).

```
<work>/proposals/<dataset-tag>/<split>.<method>.h5
<work>/features/<dataset-tag>/<backbone>/<split>.h5
<work>/models/<model-name>/{fc.pt, svm.npz, bbox_reg.npz}
<work>/detections/<model-name>/<dataset-tag>/<split>.h5 (+ comp4/)
<work>/eval/<model-name>/<dataset-tag>/<split>/{report.json, report.md, pr_*.png}
```

``<dataset-tag>`` is the dataset folder's name plus a short hash of its absolute path, so two
datasets that share a folder name (two copies of ``VOC2007``) never share artifacts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def dataset_tag(dataset: str | Path) -> str:
    """``<folder name>-<6 hex of the absolute path's SHA-1>``, e.g. ``bccd-3f2a9c``."""
    root = Path(dataset).resolve()
    return f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:6]}"


def proposals_path(work_dir: Path, dataset: str | Path, split: str, method: str) -> Path:
    return Path(work_dir) / "proposals" / dataset_tag(dataset) / f"{split}.{method}.h5"


def features_path(work_dir: Path, dataset: str | Path, split: str, backbone: str) -> Path:
    return Path(work_dir) / "features" / dataset_tag(dataset) / backbone / f"{split}.h5"


def model_dir(work_dir: Path, name: str) -> Path:
    return Path(work_dir) / "models" / name


def detections_path(work_dir: Path, model: str, dataset: str | Path, split: str) -> Path:
    return Path(work_dir) / "detections" / model / dataset_tag(dataset) / f"{split}.h5"


def eval_dir(work_dir: Path, model: str, dataset: str | Path, split: str) -> Path:
    return Path(work_dir) / "eval" / model / dataset_tag(dataset) / split


def log_path(artifact: Path) -> Path:
    """The log file written next to an artifact while its stage runs."""
    return artifact.with_name(artifact.name + ".log")
