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


def test_blocking_lock_waits_for_the_holder(tmp_path):
    """blocking=True waits until the holder releases, instead of refusing."""
    import threading
    import time

    holder = ArtifactLock(tmp_path / "a", blocking=True).acquire()
    acquired = threading.Event()

    def wait_for_it() -> None:
        with ArtifactLock(tmp_path / "a", blocking=True):
            acquired.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.3)
    assert not acquired.is_set()  # still waiting: the holder has it
    holder.release()
    waiter.join(timeout=30)
    assert acquired.is_set()
