"""joblib/loky's notice of a recycled worker is silenced once sppdet is imported; other
warnings are not. In a fresh interpreter: pytest resets the warning filters around each test."""

import subprocess
import sys

RECYCLED = ("A worker stopped while some jobs were given to the executor. This can be caused "
            "by a too short worker timeout or by a memory leak.")


def _warn(message: str, category: str) -> str:
    code = f"import warnings, sppdet; warnings.warn({message!r}, {category})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stderr


def test_recycled_worker_notice_is_silenced_and_others_are_not():
    assert _warn(RECYCLED, "UserWarning") == ""
    assert "A worker stopped for another reason" in _warn("A worker stopped for another reason",
                                                          "UserWarning")
    assert RECYCLED in _warn(RECYCLED, "RuntimeWarning")
