"""Feature caches in the work dir: variant names, coexistence of variants, and discovery."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sppdet.io.records import read_record
from sppdet.backbones import build_backbone
from sppdet.io.hashing import file_sha256
from sppdet.cli import cli
from sppdet.errors import ArtifactMissingError, ConfigError, ModelError
from sppdet.stages import cache_features
from sppdet.stages.layout import (dataset_tag, feature_variant, features_path, find_features,
                                  locate_features)

SHA = "1a2b3c4d" + "e" * 56


# ------------------------------------------------------------------------------- the names


@pytest.mark.parametrize("scales, flip, sha, expected", [
    ((480,), True, None, "s480-flip"),
    ((480,), False, None, "s480"),
    ((480, 576, 688, 864, 1200), False, None, "s480-576-688-864-1200"),
    ((480,), True, SHA, "s480-flip-w1a2b3c4d"),
    ((688,), False, SHA.upper(), "s688-w1a2b3c4d"),
    ((688, 480), False, None, "s688-480"),  # the recorded order, not sorted
])
def test_variant_names(scales, flip, sha, expected):
    assert feature_variant(scales, flip, sha) == expected


@pytest.mark.parametrize("scales, sha", [((), None), ((0,), None), ((480.5,), None),
                                         ((480,), "not-hex!"), ((480,), "1a2b")])
def test_variant_refuses_bad_settings(scales, sha):
    with pytest.raises(ConfigError):
        feature_variant(scales, False, sha)


def test_features_path_has_the_variant_folder(tmp_path):
    data = tmp_path / "VOC"
    path = features_path(tmp_path / "w", data, "test", "zf5", "s688")
    assert path == tmp_path / "w" / "features" / dataset_tag(data) / "zf5" / "s688" / "test.h5"


# ------------------------------------------------------------------------------- discovery


def _finished(path: Path, record: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    if record:
        path.with_name(path.name + ".record.json").write_text("{}")
    return path


def test_find_features_one_variant(tmp_path):
    work, data = tmp_path / "w", tmp_path / "VOC"
    one = _finished(features_path(work, data, "trainval", "zf5", "s688-flip"))
    _finished(features_path(work, data, "test", "zf5", "s688"))  # another split: not a rival
    _finished(features_path(work, data, "trainval", "alexnet", "s480"))  # another backbone
    assert find_features(work, data, "trainval", "zf5") == one
    assert find_features(work, data, "trainval", "zf5", "s688-flip") == one


def test_find_features_none(tmp_path):
    work, data = tmp_path / "w", tmp_path / "VOC"
    with pytest.raises(ArtifactMissingError) as missing:
        find_features(work, data, "test", "zf5")
    assert (f"no zf5 feature cache of split 'test' in {work / 'features'}" in str(missing.value)
            and f"run stage 'cache-features' on {data} with split='test', backbone='zf5' first"
            in str(missing.value))
    # an unfinished cache (no record yet) is not used, but named
    _finished(features_path(work, data, "test", "zf5", "s688"), record=False)
    with pytest.raises(ArtifactMissingError, match=r"\(unfinished: s688; rerun"):
        find_features(work, data, "test", "zf5")


def test_find_features_several_variants(tmp_path):
    work, data = tmp_path / "w", tmp_path / "VOC"
    for variant in ("s688", "s480-576-688-864-1200", "s688-w1a2b3c4d"):
        _finished(features_path(work, data, "test", "zf5", variant))
    with pytest.raises(ConfigError) as several:
        find_features(work, data, "test", "zf5")
    assert ("3 zf5 feature caches of split 'test' in" in str(several.value)
            and "s480-576-688-864-1200, s688, s688-w1a2b3c4d; choose one with "
                "variant=..., or give the file with features=..."
            in str(several.value))
    assert find_features(work, data, "test", "zf5", "s688") == features_path(
        work, data, "test", "zf5", "s688")
    # a model's stages prefer the variants of its training cache: the first one cached
    assert find_features(work, data, "test", "zf5", preferred=("s688-flip", "s688")) == (
        features_path(work, data, "test", "zf5", "s688"))
    with pytest.raises(ConfigError, match="3 zf5 feature caches"):
        find_features(work, data, "test", "zf5", preferred=("s480-flip", "s480"))
    with pytest.raises(ArtifactMissingError) as wrong:
        find_features(work, data, "test", "zf5", "s688-flip")
    assert ("in variant 's688-flip'" in str(wrong.value) and "variants cached for this "
            "split: s480-576-688-864-1200, s688, s688-w1a2b3c4d" in str(wrong.value))


def test_locate_features(tmp_path):
    work, data = tmp_path / "w", tmp_path / "VOC"
    inside = features_path(work, data, "train", "zf5", "s688-flip")
    assert locate_features(work, data, inside) == ("zf5", "s688-flip")
    assert locate_features(work, data, tmp_path / "elsewhere" / "train.h5") is None
    other_data = features_path(work, tmp_path / "VOC2", "train", "zf5", "s688")
    assert locate_features(work, data, other_data) is None


# ------------------------------------------------------------------- coexistence (real caches)


def _cache(work: Path, dataset, *args: str):
    return CliRunner().invoke(cli, ["-q", "-w", str(work), "cache-features", str(dataset),
                                    "--backbone", "zf5", "--device", "cpu", *args])


def test_caches_of_other_settings_coexist(tiny_voc, tmp_path):
    work = tmp_path / "work"
    weights = tmp_path / "zf5.pt"
    build_backbone("zf5", seed=1).save_weights(str(weights))
    runs = {"s48": ("--scales", "48", "--no-flip"), "s48-80-flip": ("--scales", "48,80"),
            f"s48-w{file_sha256(str(weights))[:8]}": ("--scales", "48", "--no-flip",
                                                      "--weights", str(weights))}
    for variant, args in runs.items():
        result = _cache(work, tiny_voc, *args)
        assert result.exit_code == 0, result.output
    folder = work / "features" / dataset_tag(tiny_voc) / "zf5"
    assert sorted(p.name for p in folder.iterdir()) == sorted(runs)
    for variant in runs:  # every one is still finished and up to date
        assert read_record(folder / variant / "trainval.h5").stage == "cache-features"
    for variant, args in runs.items():
        result = CliRunner().invoke(cli, ["-w", str(work), "cache-features", str(tiny_voc),
                                          "--backbone", "zf5", "--device", "cpu", *args])
        assert result.exit_code == 0 and "up to date" in result.output, (variant, result.output)
    record = read_record(folder / "s48-80-flip" / "trainval.h5")
    assert record.params["scales"] == [48, 80] and record.params["flip"] is True


def test_default_out_names_an_unreadable_weights_file(tmp_path):
    with pytest.raises(ModelError, match="cannot read the weights file .*missing.pt"):
        cache_features.default_out(tmp_path, tmp_path, "test", backbone_name="zf5",
                                   weights=str(tmp_path / "missing.pt"), scales=(48,),
                                   flip=False)


def test_help_shows_the_feature_variant_default():
    for command in ("finetune", "train-svm", "train-bbox-reg", "detect"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0
        text = " ".join(result.output.split())
        assert "--feature-variant NAME" in text, command
        assert "[default: the only one holding the split]" in text, command


def test_a_cache_made_by_the_command_is_found(tiny_voc, tmp_path):
    """Discovery looks for what cache-features writes: the file and its record."""
    work = tmp_path / "work"
    assert _cache(work, tiny_voc, "--scales", "48").exit_code == 0
    found = find_features(work, tiny_voc, "trainval", "zf5")
    assert found.parent.name == "s48-flip"  # cache-features mirrors by default
    assert json.loads(found.with_name("trainval.h5.record.json").read_text())["stage"] == \
        "cache-features"
