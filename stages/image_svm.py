"""Stage ``image-svm``: linear SVMs on full-image features (paper 3.2), and their report."""

from __future__ import annotations

import json
from pathlib import Path

from sppdet.classification.image_svm import ImageSVMResult, read_feature_file, train_and_test
from sppdet.io.atomic import write_text_atomic

from .params import ImageSvmOptions

#: The report's name beside the test features when no path is given.
REPORT_NAME = "image-svm.json"


def run(train_features: Path, test_features: Path, out: Path | None = None, *,
        C: float = ImageSvmOptions.C, normalize: bool = ImageSvmOptions.normalize
        ) -> tuple[ImageSVMResult, Path]:
    """Train one-vs-rest SVMs on ``train_features``, score ``test_features``, write the JSON
    report to ``out`` (default: :data:`REPORT_NAME` beside the test features).

    Returns:
        ``(result, report path)``.
    """
    result = train_and_test(read_feature_file(train_features), read_feature_file(test_features),
                            C=C, normalize=normalize)
    out = Path(out) if out is not None else Path(test_features).with_name(REPORT_NAME)
    write_text_atomic(out, json.dumps(result.to_dict(), indent=2) + "\n")
    return result, out
