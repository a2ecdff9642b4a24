"""One writer per artifact: the flock excludes another process and a second lock here."""

import os
import subprocess
import sys
import textwrap

import pytest

from sppdet.errors import ArtifactLockedError
from sppdet.io.locks import ArtifactLock


def test_lock_excludes_another_process(tmp_path):
    path = tmp_path / "a.h5"
    script = textwrap.dedent(f"""
        from sppdet.io.locks import ArtifactLock
        from sppdet.errors import ArtifactLockedError
        try:
            ArtifactLock({str(path)!r}).acquire()
        except ArtifactLockedError as exc:
            print("LOCKED", exc)
        else:
            print("FREE")
    """)
    with ArtifactLock(path):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert out.stdout.startswith("LOCKED") and f"pid {os.getpid()}" in out.stdout
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "FREE"


def test_lock_in_same_process(tmp_path):
    with ArtifactLock(tmp_path / "a"):
        with pytest.raises(ArtifactLockedError):
            ArtifactLock(tmp_path / "a").acquire()
