"""The fc head's file (fc.pt): round trip through the checkpoint helper, files written before
the format tag, and other files refused."""

import pytest
import torch

from sppdet.errors import ModelError
from sppdet.features.fc_head import FcHead
from sppdet.io.checkpoints import save_checkpoint


def test_round_trip_keeps_weights_config_and_meta(tmp_path):
    head = FcHead(12, 3, hidden=8, dropout=0.5, seed=1)
    head.save(tmp_path / "fc.pt", classes=["a", "b", "c"], levels=[2, 1])
    loaded, meta = FcHead.load(tmp_path / "fc.pt")
    assert meta == {"classes": ["a", "b", "c"], "levels": [2, 1]}
    assert loaded.config() == head.config() and not loaded.training
    for key, value in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.pt"]


def test_a_file_written_before_the_format_tag_still_loads(tmp_path):
    head = FcHead(12, 3, hidden=8)
    torch.save({"config": head.config(), "state_dict": head.state_dict(), "meta": {"k": 1}},
               tmp_path / "old.pt")  # the layout FcHead.save wrote before the tags
    loaded, meta = FcHead.load(tmp_path / "old.pt")
    assert meta == {"k": 1} and torch.equal(loaded.fc8.weight, head.fc8.weight)


def test_other_files_are_refused(tmp_path):
    with pytest.raises(ModelError, match="fc checkpoint not found; run `sppdet finetune`"):
        FcHead.load(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "other.pt", {"config": {}}, format="sppdet-spp-classifier",
                    version=1)
    with pytest.raises(ModelError, match="not an sppdet fc checkpoint .*sppdet-spp-classifier"):
        FcHead.load(tmp_path / "other.pt")
    torch.save({"state_dict": {}}, tmp_path / "no-config.pt")
    with pytest.raises(ModelError, match="not an sppdet fc checkpoint"):
        FcHead.load(tmp_path / "no-config.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelError, match="cut.pt: cannot read the checkpoint"):
        FcHead.load(tmp_path / "cut.pt")
