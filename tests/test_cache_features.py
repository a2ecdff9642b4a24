"""cache-features: round trip, resume, refusals, and the CLI."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sppdet.io.records import read_record
from sppdet.backbones import build_backbone
from sppdet.cli import cli
from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError, StaleArtifactError
from sppdet.features.cache import FeatureCache
from sppdet.ops.scales import resize_image, resized_size
from sppdet.ops.spp import pool_windows
from sppdet.stages import cache_features

SCALES = (48, 80)


@pytest.fixture
def cached(tiny_voc, tmp_path):
    out = tmp_path / "features.h5"
    summary = cache_features.run(tiny_voc, "trainval", out, backbone_name="zf5",
                                 scales=SCALES, flip=True, device="cpu")
    assert summary.computed == 3 and summary.finished
    return tiny_voc, out


def test_round_trip_equals_fresh_maps(cached):
    dataset, out = cached
    data = VOCDataset(dataset, "trainval")
    backbone = build_backbone("zf5", seed=0).eval()
    image = data.load_image("img2")
    boxes = np.array([[0, 0, 64, 48], [4, 5, 30, 40], [20.5, 3, 22, 9]], np.float32)
    with FeatureCache(out) as cache:
        assert cache.scales == SCALES and cache.backbone == "zf5" and cache.has_flip
        assert cache.image_size("img2") == (48, 64)
        pooled = cache.pool("img2", boxes, scale=80)
    with torch.no_grad():
        resized = resize_image(image, 80)
        fresh = backbone(backbone.preprocess(resized).unsqueeze(0))[0]
    fresh = fresh.half().float()  # the cache stores float16
    expected = pool_windows({80: fresh}, (48, 64), boxes, [80, 80, 80], stride=16,
                            cell_centers_fn=backbone.cell_centers)
    # the stage runs the trunk in channels_last, whose float sums can differ in the last bit,
    # which float16 storage may turn into one float16 step
    torch.testing.assert_close(pooled, expected, rtol=2**-9, atol=1e-2)
    assert (pooled - expected).abs().mean() < 1e-4


def test_flipped_maps_mirror_the_image(cached):
    _, out = cached
    with FeatureCache(out) as cache:
        plain = cache.maps("img1")[48]
        mirrored = cache.maps("img1", flip=True)[48]
    assert plain.shape == mirrored.shape
    assert not torch.equal(plain, mirrored)


def test_record_and_up_to_date(cached):
    dataset, out = cached
    record = read_record(out)
    assert record.params["scales"] == list(SCALES) and record.params["backbone"]["name"] == "zf5"
    again = cache_features.run(dataset, "trainval", out, backbone_name="zf5", scales=SCALES,
                               flip=True, device="cpu")
    assert again.up_to_date


def test_unknown_scale_and_flip_refused(cached):
    _, out = cached
    with FeatureCache(out) as cache:
        with pytest.raises(ConfigError, match="scales \\[688\\] are not in"):
            cache.maps("img1", scales=[688])
        with pytest.raises(ConfigError, match="not cached"):
            cache.pool("img1", np.zeros((1, 4)), scale=688)


def test_partial_run_with_other_scales_is_refused(tiny_voc, tmp_path):
    out = tmp_path / "features.h5"
    script = textwrap.dedent(f"""
        import os, signal
        import sppdet.io.item_store as art
        from sppdet.stages import cache_features
        real_write = art.ItemStore.write
        calls = []
        def write_then_die(self, *args, **kwargs):
            real_write(self, *args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        art.ItemStore.write = write_then_die
        cache_features.run({str(tiny_voc)!r}, "trainval", {str(out)!r}, backbone_name="zf5",
                           scales=(48,), device="cpu")
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    assert not out.exists()
    with pytest.raises(StaleArtifactError, match="partial run"):
        cache_features.run(tiny_voc, "trainval", out, backbone_name="zf5", scales=(48, 80),
                           device="cpu")
    resumed = cache_features.run(tiny_voc, "trainval", out, backbone_name="zf5", scales=(48,),
                                 device="cpu")
    assert resumed.resumed == 2 and resumed.computed == 1 and resumed.finished
    clean = tmp_path / "clean.h5"
    cache_features.run(tiny_voc, "trainval", clean, backbone_name="zf5", scales=(48,),
                       device="cpu")
    with FeatureCache(out) as a, FeatureCache(clean) as b:
        assert a.image_ids() == b.image_ids()
        for image_id in a.image_ids():
            assert torch.equal(a.maps(image_id)[48], b.maps(image_id)[48])


def test_disk_space_check(tiny_voc, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 1000))
    with pytest.raises(ConfigError, match="needs about .* GB .* free"):
        cache_features.run(tiny_voc, "trainval", tmp_path / "f.h5", backbone_name="zf5",
                           scales=(48,), device="cpu")


def test_cli_cache_features(tiny_voc, tmp_path):
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "work"), "cache-features",
                                      str(tiny_voc), "--backbone", "zf5", "--scales", "48",
                                      "--compression", "gzip"])
    assert result.exit_code == 0, result.output
    assert "MB per image" in result.output and "zf5" in result.output
    result = CliRunner().invoke(cli, ["cache-features", str(tiny_voc), "--scales", "4x"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["cache-features", str(tiny_voc), "--device", "cuda:7"])
    assert result.exit_code == 2  # a usage error, raised by the library as a ParameterError
    assert "Invalid value for '--device': cuda:7: CUDA is not available" in result.output


def test_estimate_bytes_matches_uncompressed_size(tiny_voc):
    backbone = build_backbone("zf5", seed=0)
    h, w = resized_size(48, 64, 80)
    oh, ow = backbone.output_size(h, w)
    expected = 256 * oh * ow * 2 * 2  # float16, flipped too
    assert cache_features.estimate_bytes(backbone, [(48, 64)], (80,), flip=True,
                                         bytes_per_value=2) == expected


def test_zstd_cache_round_trips_through_the_stage_and_a_fresh_reader(tiny_voc, tmp_path):
    pytest.importorskip("hdf5plugin", reason="--compression zstd needs hdf5plugin")
    plain, packed = tmp_path / "lzf.h5", tmp_path / "zstd.h5"
    for out, codec in ((plain, "lzf"), (packed, "zstd")):
        summary = cache_features.run(tiny_voc, "trainval", out, backbone_name="zf5",
                                     scales=(48,), compression=codec, device="cpu")
        assert summary.finished and summary.computed == 3
    assert read_record(packed).params["compression"] == "zstd"
    # a fresh process, as a training stage that never imported hdf5plugin itself
    script = textwrap.dedent(f"""
        import numpy as np
        from sppdet.features.cache import FeatureCache
        with FeatureCache({str(packed)!r}) as cache:
            np.savez({str(tmp_path / 'read.npz')!r},
                     **{{i: cache.maps(i)[48].numpy() for i in cache.image_ids()}})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    read = np.load(tmp_path / "read.npz")
    with FeatureCache(plain) as cache:
        assert sorted(read.files) == sorted(cache.image_ids())
        for image_id in cache.image_ids():
            np.testing.assert_array_equal(read[image_id], cache.maps(image_id)[48].numpy())


# --- reliability: --force, kill/resume, left-out images, full disk ---

def test_force_rebuilds_a_truncated_cache(cached, tmp_path):
    """Case 1: 'computed 3 images' must be true: the truncated file is replaced."""
    from tests.fault_injection import assert_same_items

    dataset, out = cached
    reference = tmp_path / "reference.h5"
    cache_features.run(dataset, "trainval", reference, backbone_name="zf5", scales=SCALES,
                       flip=True, device="cpu")
    out.write_bytes(out.read_bytes()[:4096])
    summary = cache_features.run(dataset, "trainval", out, backbone_name="zf5", scales=SCALES,
                                 flip=True, device="cpu", force=True)
    assert summary.computed == 3 and "computed 3 images" in summary.to_text()
    assert_same_items(out, reference)


def test_killed_cache_resumes_bit_for_bit(tiny_voc, tmp_path):
    """Kill/resume equality of cache-features."""
    from tests.fault_injection import assert_same_items, kill_at, leftovers

    out = tmp_path / "killed" / "features.h5"
    options = dict(backbone_name="zf5", scales=SCALES, flip=True, device="cpu")
    kill_at("cache-features:item-committed:2", f"""
        from sppdet.stages import cache_features
        cache_features.run({str(tiny_voc)!r}, "trainval", {str(out)!r}, **{options!r})
    """)
    resumed = cache_features.run(tiny_voc, "trainval", out, **options)
    assert resumed.resumed == 2 and resumed.computed == 1
    assert leftovers(out.parent) == []
    cache_features.run(tiny_voc, "trainval", tmp_path / "ref.h5", **options)
    assert_same_items(out, tmp_path / "ref.h5")


def test_left_out_images_and_disk_full(tiny_voc, tmp_path, monkeypatch):
    """Cases 6 and 8 (cache-features)."""
    from tests.fault_injection import inject

    (tiny_voc / "JPEGImages" / "img3.jpg").unlink()
    work = tmp_path / "work"
    args = ["-w", str(work), "cache-features", str(tiny_voc), "--backbone", "zf5",
            "--scales", "48", "--device", "cpu"]
    with inject(monkeypatch, "cache-features:item-write:2:enospc"):
        full = CliRunner().invoke(cli, args)
    assert full.exit_code == 1
    assert "Error: disk full writing " in full.output and "img2.h5" in full.output
    assert "internal error" not in full.output
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "computed 1 images" in result.output and "1 already done" in result.output
    assert "left out: 1 image(s) of split 'trainval'" in result.output
    assert "img3: " in result.output and "image file not found" in result.output
    assert "left out of split 'trainval': img3" in next(work.rglob("*.h5.log")).read_text()
