"""CPU settings that make repeated conv passes faster (REFERENCE 12).

glibc's malloc serves large blocks with ``mmap`` and gives them back to the OS on ``free``
(and trims the top of the heap), so each forward pass page-faults its activation buffers in
again; on a 2-core machine that was about half of the conv time. :func:`keep_freed_memory`
tells glibc to keep freed memory in the process instead. The cost is a higher resident size:
memory freed after the largest pass stays with the process until :func:`release_freed_memory`
puts glibc's defaults back and returns it (a stage calls it when its conv loop ends, so that
the stages after it in the same process, such as fine-tuning in ``pipeline``, do not carry
the conv passes' memory).

Measured on a 500x375 image, 5 scales, 2 threads (benchmarks/backbone_speed.md):
EfficientNet-Lite0 2.37 -> 0.73 s, ZF-5 2.48 -> 1.76 s; with
``backbone.to(memory_format=torch.channels_last)`` (and channels-last input) on top,
0.57 s and 1.33 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
from collections.abc import Iterator

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems).
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
# glibc's defaults (malloc/malloc.c: DEFAULT_MMAP_THRESHOLD_MIN, DEFAULT_TRIM_THRESHOLD,
# DEFAULT_MMAP_MAX).
DEFAULT_MMAP_THRESHOLD = 128 * 1024
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _mallopt(settings: list[tuple[int, int]], *, trim: bool = False) -> bool:
    """Apply ``mallopt(parameter, value)`` for each pair (then ``malloc_trim(0)`` if ``trim``);
    True if glibc accepted every one, False on other C libraries."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    accepted = [libc.mallopt(parameter, value) for parameter, value in settings]
    if trim:
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.malloc_trim(0)
    return all(value == 1 for value in accepted)


def keep_freed_memory(trim_threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc keep freed memory in the process (no-op on other platforms).

    Sets ``M_MMAP_MAX = 0`` (large blocks come from the heap, not from fresh ``mmap`` calls),
    ``M_MMAP_THRESHOLD`` to its maximum (which also switches off glibc's dynamic threshold)
    and ``M_TRIM_THRESHOLD`` (the heap top is returned to the OS only when more than this many
    bytes are free there). The effect is process-wide and lasts until the process ends; it is
    the same as starting Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<bytes>``.

    Args:
        trim_threshold_bytes: free bytes at the top of the heap that glibc keeps before
            trimming (default 1 GiB).

    Returns:
        True if glibc accepted all settings, False elsewhere (not Linux/glibc, or refused).
    """
    return _mallopt([(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD), (M_MMAP_MAX, 0),
                     (M_TRIM_THRESHOLD, min(trim_threshold_bytes, 2**31 - 1))])


def release_freed_memory() -> bool:
    """Undo :func:`keep_freed_memory`: glibc's default thresholds, then ``malloc_trim(0)``.

    glibc has no call that restores its *dynamic* mmap threshold, so the defaults are set as
    fixed values (128 KiB, as a fresh process starts with). ``malloc_trim(0)`` returns the free
    memory at the top of the heap and in its free lists to the OS.

    Returns:
        True if glibc accepted all settings, False elsewhere (not Linux/glibc, or refused).
    """
    return _mallopt([(M_MMAP_MAX, DEFAULT_MMAP_MAX), (M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD),
                     (M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)], trim=True)


@contextlib.contextmanager
def freed_memory_kept(enabled: bool = True) -> Iterator[bool]:
    """:func:`keep_freed_memory` while inside (when ``enabled``), :func:`release_freed_memory`
    on the way out; yields whether the settings were applied."""
    applied = keep_freed_memory() if enabled else False
    try:
        yield applied
    finally:
        if applied:
            release_freed_memory()
