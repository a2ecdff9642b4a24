"""FeatureCache: plugin codecs, the finiteness check, and maps read back exactly."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record
from sppdet.errors import ConfigError, DataError
from sppdet.features.cache import FEATURES_STAGE, FeatureCache, all_finite, load_codec


def write_cache(path, maps: dict[str, np.ndarray], *, compression: str = "lzf",
                options: dict | None = None) -> None:
    """A one-image features artifact ``img`` (64x48 image, stride 16) holding ``maps``."""
    scales = sorted(int(name[1:]) for name in maps)
    record = Record(FEATURES_STAGE, {
        "backbone": {"name": "fake"}, "stride": 16, "channels": 2, "scales": scales,
        "flip": False, "dtype": str(next(iter(maps.values())).dtype),
        "compression": compression,
    })
    with ItemStore(path, record) as store:
        store.write("img", maps, {"width": 64, "height": 48,
                                  "cell_centers": json.dumps({str(s): [7.5, 7.5]
                                                              for s in scales})},
                    compression=options)
        store.finalize(["img"])


def test_all_finite_by_hand():
    assert all_finite(torch.zeros(0))
    assert all_finite(torch.tensor([1.0, -2.0, 65504.0]))
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), 0.0]))
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))  # sum is NaN
    huge = torch.full((4,), 3e38)  # finite values whose float32 sum overflows to inf
    assert not torch.isfinite(huge.sum()) and all_finite(huge)
    assert not all_finite(torch.tensor([3e38, 3e38, float("nan")]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_maps_read_back_exactly_as_float32(tmp_path, dtype):
    rng = np.random.default_rng(0)
    stored = (rng.standard_normal((2, 3, 4)) * 100).astype(dtype)
    write_cache(tmp_path / "f.h5", {"s48": stored})
    with FeatureCache(tmp_path / "f.h5") as cache:
        got = cache.maps("img")[48]
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), stored.astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_map_with_nan_or_inf_is_refused_with_the_image_named(tmp_path, bad):
    stored = np.ones((2, 3, 4), np.float16)
    stored[1, 2, 3] = bad
    write_cache(tmp_path / "f.h5", {"s48": stored})
    with FeatureCache(tmp_path / "f.h5") as cache:
        with pytest.raises(DataError, match="image img at scale 48 holds NaN or inf"):
            cache.maps("img")


def test_zstd_cache_is_read_without_importing_hdf5plugin_first(tmp_path):
    import subprocess

    hdf5plugin = pytest.importorskip("hdf5plugin", reason="zstd needs hdf5plugin")
    stored = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    write_cache(tmp_path / "f.h5", {"s48": stored}, compression="zstd",
                options=dict(hdf5plugin.Zstd(clevel=3)))
    # a fresh process, as a training stage that never imported hdf5plugin itself
    script = (f"from sppdet.features.cache import FeatureCache\n"
              f"with FeatureCache({str(tmp_path / 'f.h5')!r}) as cache:\n"
              f"    print(cache.maps('img')[48].sum().item())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == float(stored.astype(np.float32).sum())


def test_plugin_codec_without_hdf5plugin_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)  # makes `import hdf5plugin` fail
    with pytest.raises(ConfigError, match="compression zstd, which needs the hdf5plugin"):
        load_codec("zstd", tmp_path / "f.h5")
    for codec in ("none", "lzf", "gzip"):
        load_codec(codec, tmp_path / "f.h5")  # HDF5's own filters need nothing
