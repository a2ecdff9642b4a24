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
