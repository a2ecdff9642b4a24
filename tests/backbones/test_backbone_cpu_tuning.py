"""CPU tuning: the allocator helper and channels_last inputs."""

from __future__ import annotations

import copy
import platform
import subprocess
import sys

import pytest
import torch

from sppdet.backbones import cpu_tuning


def test_keep_freed_memory_applies_on_glibc_linux():
    # In a child process: the setting is process-wide and cannot be undone.
    code = "from sppdet.backbones.cpu_tuning import keep_freed_memory; print(keep_freed_memory())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert result.stdout.strip() == str(expected)


def test_keep_freed_memory_is_a_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(cpu_tuning.platform, "system", lambda: "Darwin")
    assert cpu_tuning.keep_freed_memory() is False
    assert cpu_tuning.release_freed_memory() is False


_RSS_AFTER_FREE = """
import os, numpy as np
from sppdet.backbones.cpu_tuning import keep_freed_memory, release_freed_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
keep_freed_memory()
base = rss_mb()
block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
del block
kept = rss_mb() - base
release_freed_memory()
released = rss_mb() - base
block = np.ones(300 * 2**20 // 8)
del block  # with the defaults back, a large block is unmapped at once
after = rss_mb() - base
print(f"{kept:.0f} {released:.0f} {after:.0f}")
"""


@pytest.mark.skipif(not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"),
                    reason="the allocator settings exist on glibc only")
def test_release_freed_memory_returns_what_keep_freed_memory_kept():
    # In a child process: the settings are process-wide.
    result = subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE], capture_output=True,
                            text=True, check=True)
    kept, released, after = map(float, result.stdout.split())
    assert kept > 250  # the freed 300 MiB stayed resident
    assert released < 50 and after < 50


@pytest.mark.parametrize("name", ["zf5", "overfeat5", "efficientnet_lite0", "resnet50"])
def test_channels_last_gives_the_same_features(name, random_backbone):
    backbone = random_backbone(name)
    fast = copy.deepcopy(backbone).to(memory_format=torch.channels_last)
    image = torch.randn(1, 3, 101, 134)
    with torch.inference_mode():
        expected = backbone(image)
        got = fast(image.contiguous(memory_format=torch.channels_last))
    # channels_last reorders the float sums; through resnet50's 53 layers the difference
    # reaches a few 1e-4 relative. A wrong layout would differ by the features' own size.
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3 * scale)
