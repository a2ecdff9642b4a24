"""Remedies: the library words them by parameter name, the command line with its options."""

import pickle
import re

import click
import pytest
from click.testing import CliRunner

from sppdet.cli import cli
from sppdet.cli.remedies import error_message, render_remedy
from sppdet.errors import (YOUR_CHOICE, ArtifactError, ConfigError, ParameterError, Remedy,
                           SppdetError)

FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _ctx(command: str) -> click.Context:
    """A context of the real ``sppdet`` group running ``command``."""
    ctx = click.Context(cli, info_name="sppdet")
    ctx.invoked_subcommand = command
    return ctx


def test_library_wording_names_parameters_not_flags():
    remedy = Remedy.rerun("propose", force=True)
    assert remedy.describe() == "rerun stage 'propose' with force=True"
    error = ArtifactError("p.h5 is truncated", remedy=remedy)
    assert str(error) == "p.h5 is truncated; rerun stage 'propose' with force=True"
    assert error.message == "p.h5 is truncated" and error.remedy is remedy
    skip = Remedy.rerun(alternative="fix them", purpose=" to finish without them",
                        on_error="skip")
    assert skip.describe() == "fix them, or rerun with on_error='skip' to finish without them"
    chained = Remedy.rerun(verb="choose one", variant=YOUR_CHOICE,
                           otherwise=Remedy.rerun(verb="give the file", features=YOUR_CHOICE))
    assert chained.describe() == "choose one with variant=..., or give the file with features=..."
    made = Remedy.rerun("cache-features", "DATASET", verb="run", split="val", purpose=" first")
    assert made.describe() == "run stage 'cache-features' on DATASET with split='val' first"
    assert str(ConfigError("plain")) == "plain"  # no remedy: the message alone


@pytest.mark.parametrize("command, remedy, words", [
    ("finetune", Remedy.rerun("propose", force=True), "rerun `sppdet propose --force`"),
    ("propose", Remedy.rerun(alternative="fix them", purpose=" to finish without them",
                             on_error="skip"),
     "fix them, or rerun with --on-error skip to finish without them"),
    ("detect", Remedy.rerun(alternative="run `sppdet train-bbox-reg`", bbox_reg=False),
     "run `sppdet train-bbox-reg`, or rerun with --no-bbox-reg"),
    ("finetune", Remedy.rerun("cache-features", flip=True), "rerun `sppdet cache-features --flip`"),
    ("propose", Remedy.rerun(edge_model=YOUR_CHOICE), "rerun with --edge-model FILE"),
    # the library's ``variant`` is the command line's --feature-variant
    ("detect", Remedy.rerun(verb="choose one", variant=YOUR_CHOICE,
                            otherwise=Remedy.rerun(verb="give the file", features=YOUR_CHOICE)),
     "choose one with --feature-variant NAME, or give the file with --features FILE"),
    ("finetune", Remedy.rerun("cache-features", "data/voc", verb="run", split="val",
                              backbone="zf5", purpose=" first"),
     "run `sppdet cache-features data/voc --split val --backbone zf5` first"),
])
def test_the_command_line_renders_its_own_options(command, remedy, words):
    assert render_remedy(_ctx(command), remedy) == words


def test_a_setting_without_an_option_keeps_the_library_words():
    # detect's --fc is another parameter (fc_mode); an fc checkpoint path has no option there
    remedy = Remedy.rerun(verb="give it", fc=YOUR_CHOICE)
    assert render_remedy(_ctx("detect"), remedy) == "give it with fc=..."
    assert render_remedy(_ctx("propose"), Remedy.rerun("no-such-command", force=True)) \
        == "rerun stage 'no-such-command' with force=True"
    error = ArtifactError("x", remedy=Remedy.rerun(force=True))
    assert error_message(_ctx("detect"), error) == "x; rerun with --force"
    assert error_message(_ctx("detect"), ArtifactError("y")) == "y"


def test_remedies_survive_pickling():
    """Errors cross process boundaries (joblib workers) with their remedy."""
    error = pickle.loads(pickle.dumps(ArtifactError("x", remedy=Remedy.rerun(force=True))))
    assert type(error) is ArtifactError and error.remedy == Remedy.rerun(force=True)
    assert str(error) == "x; rerun with force=True"
    param = pickle.loads(pickle.dumps(ParameterError("scales", "too small")))
    assert isinstance(param, SppdetError) and param.param == "scales"
    assert str(param) == "too small"


PROPOSE = ["--split", "trainval", "--max-boxes", "50"]


def test_failed_items_say_how_to_finish_without_them(tiny_voc, tmp_path):
    from sppdet.stages import propose

    (tiny_voc / "JPEGImages" / "img1.jpg").write_bytes(b"\xff\xd8garbage")
    out = tmp_path / "p.h5"
    with pytest.raises(ArtifactError) as info:  # the library: no flag
        propose.run(tiny_voc, "trainval", out, method_options={"max_boxes": 50})
    assert "on_error='skip'" in str(info.value) and not FLAG.search(str(info.value))
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), "propose", str(tiny_voc),
                                      "--out", str(out), *PROPOSE])
    assert result.exit_code == 1, result.output
    assert "fix them, or rerun with --on-error skip to finish without them" in result.output
    assert "on_error=" not in result.output


def test_up_to_date_summary_says_how_to_rebuild(tiny_voc, tmp_path):
    args = ["-w", str(tmp_path / "w"), "propose", str(tiny_voc), *PROPOSE]
    assert CliRunner().invoke(cli, args).exit_code == 0
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert re.search(r"Proposals are up to date: \S+ \(rerun with --force to rebuild it\)",
                     again.output), again.output


def test_missing_edge_model_names_the_option(tiny_voc, tmp_path):
    missing = tmp_path / "model.yml.gz"
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), "propose", str(tiny_voc),
                                      "--method", "edgeboxes", "--edge-model", str(missing)])
    assert result.exit_code == 1, result.output
    assert "rerun with --edge-model FILE (its path), or without it" in result.output
    assert "edge_model=" not in result.output


def test_a_parameter_error_points_at_the_option(tiny_voc, tmp_path):
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), "cache-features",
                                      str(tiny_voc), "--split", "trainval", "--scales", "8"])
    assert result.exit_code == 2, result.output
    assert "'--scales'" in result.output and "at least 16 pixels" in result.output
