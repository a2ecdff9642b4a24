"""One style across commands (issue 13, item 6): paired switches, ``--force`` wherever an
output is rebuilt, ``--backbone``/``--method`` as choices, DATASET first."""

from __future__ import annotations

import click

from sppdet.cli import cli
from sppdet.stages.params import BACKBONE_NAMES, PROPOSAL_SOURCES

#: Flags that are actions, not settings with an opposite: no ``--no-`` form.
ACTIONS = {"force", "voc2007", "plan_only"}
#: Commands that only read and report, or delete leftovers (no artifact with a record to
#: rebuild).
REPORTS_ONLY = {"inspect-data", "eval-proposals", "image-svm", "clean"}


def _options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


def test_every_switch_is_a_pair() -> None:
    pairs = 0
    for name, command in cli.commands.items():
        for option in _options(command).values():
            if option.is_flag and option.is_bool_flag and option.name not in ACTIONS | {"help"}:
                assert option.secondary_opts, (name, option.opts)
                (on,), (off,) = option.opts, option.secondary_opts
                assert off == "--no-" + on.removeprefix("--"), (name, on, off)
                pairs += 1
    assert pairs >= 14  # flip, include-difficult, strict, bbox-reg, whiten, plots...


def test_every_command_that_builds_an_artifact_takes_force() -> None:
    for name, command in cli.commands.items():
        if name not in REPORTS_ONLY:
            assert "force" in _options(command), name


def test_backbone_and_method_are_choices_everywhere() -> None:
    seen = {"backbone": 0, "method": 0}
    for name, command in cli.commands.items():
        options = _options(command)
        if "backbone" in options:
            assert isinstance(options["backbone"].type, click.Choice), name
            assert set(options["backbone"].type.choices) <= set(BACKBONE_NAMES), name
            seen["backbone"] += 1
        if "method" in options:
            assert isinstance(options["method"].type, click.Choice), name
            assert set(options["method"].type.choices) <= set(PROPOSAL_SOURCES), name
            seen["method"] += 1
    assert seen["backbone"] >= 6 and seen["method"] >= 6


def test_a_dataset_is_the_first_argument() -> None:
    for name, command in cli.commands.items():
        arguments = [p.name for p in command.params if isinstance(p, click.Argument)]
        if "dataset" in arguments:
            assert arguments[0] == "dataset", (name, arguments)
    assert [p.name for p in cli.commands["eval-proposals"].params
            if isinstance(p, click.Argument)] == ["dataset", "proposals"]
    assert [p.name for p in cli.commands["classify"].params
            if isinstance(p, click.Argument)] == ["dataset", "model"]


def test_classify_explains_the_argument_order(tmp_path) -> None:
    from click.testing import CliRunner

    model_dir = tmp_path / "zf5-mine"
    model_dir.mkdir()
    (model_dir / "classifier.pt").write_bytes(b"")
    dataset = tmp_path / "data"
    dataset.mkdir()
    result = CliRunner().invoke(cli, ["classify", str(model_dir), str(dataset)])
    assert result.exit_code == 2 and "DATASET comes first" in result.output
