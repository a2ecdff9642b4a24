"""The same kind of mistake gives the same exit code in every command (issue 13, item 3).

Usage errors (a bad value, options that do not go together) exit 2 before any work; data,
artifact and config-file errors exit 1 with ``Error: <message>``. Library messages name no
command-line flag: the CLI names its options itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sppdet.cli import cli
from sppdet.devices import check_device_name, resolve_device
from sppdet.errors import ConfigError, ParameterError
from sppdet.io.item_store import parse_shard


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _dataset_commands(tiny_voc: Path) -> dict[str, list[str]]:
    """A valid start of every command that reads a dataset (its required arguments)."""
    data = str(tiny_voc)
    return {"propose": ["propose", data], "cache-features": ["cache-features", data],
            "finetune": ["finetune", data, "-n", "m"], "train-svm": ["train-svm", data, "-n", "m"],
            "train-bbox-reg": ["train-bbox-reg", data, "-n", "m"],
            "detect": ["detect", data, "-n", "m"], "pipeline": ["pipeline", data],
            "pretrain": ["pretrain", data], "inspect-data": ["inspect-data", data]}


# every (option, bad value) below is refused by the option's type, in every command having it
BAD_VALUES = [("--jobs", "0"), ("--jobs", "two"), ("--backbone", "nosuch"),
              ("--method", "nosuch"), ("--device", "gpu"), ("--device", "cuda:x"),
              ("--shard", "3/2"), ("--shard", "half"), ("--scales", "4x"), ("--scales", ","),
              ("--seed", "x"), ("--on-error", "ignore")]


def _has_option(command: str, option: str) -> bool:
    return any(option in param.opts for param in cli.commands[command].params)


def test_a_bad_value_is_a_usage_error_in_every_command(tiny_voc, tmp_path) -> None:
    checked = set()
    for name, start in _dataset_commands(tiny_voc).items():
        for option, value in BAD_VALUES:
            if not _has_option(name, option):
                continue
            result = invoke("-w", tmp_path / "work", *start, option, value)
            assert result.exit_code == 2, (name, option, value, result.output)
            assert "Invalid value for" in result.output or "Error: " in result.output
            checked.add((name, option))
    assert not (tmp_path / "work").exists()  # refused before any work
    # each option is checked in every command that has it
    for option in ("--backbone", "--method", "--device", "--shard", "--scales", "--jobs"):
        having = [n for n in _dataset_commands(tiny_voc) if _has_option(n, option)]
        assert len(having) >= 2 and all((n, option) in checked for n in having), option


@pytest.mark.parametrize("command", ["finetune", "train-svm", "train-bbox-reg", "detect"])
def test_exclusive_options_are_a_usage_error_in_every_command(command, tiny_voc,
                                                              tmp_path) -> None:
    start = _dataset_commands(tiny_voc)[command]
    some_file = tmp_path / "x.h5"
    some_file.write_bytes(b"")
    for args in (["--features", some_file, "--feature-variant", "s688"],
                 ["--proposals", some_file, "--method", "ss-fast"]):
        result = invoke("-w", tmp_path / "work", *start, *args)
        assert result.exit_code == 2, (command, args, result.output)
        assert re.search(r"give either --\S+ or --\S+, not both", result.output)
    if _has_option(command, "--backbone"):
        result = invoke("-w", tmp_path / "work", *start, "--features", some_file,
                        "--backbone", "zf5")
        assert result.exit_code == 2 and "not both" in result.output


@pytest.mark.parametrize("command", ["inspect-data", "propose", "cache-features", "pretrain"])
def test_a_missing_split_is_a_data_error_in_every_command(command, tiny_voc, tmp_path) -> None:
    start = _dataset_commands(tiny_voc)[command]
    result = invoke("-w", tmp_path / "work", *start, "--split", "nosuch")
    assert result.exit_code == 1, (command, result.output)
    assert result.output.startswith("Error: ") and "nosuch" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["finetune", "train-svm", "train-bbox-reg", "detect"])
def test_a_missing_input_artifact_is_an_error_in_every_command(command, tiny_voc,
                                                               tmp_path) -> None:
    extra = ["--backbone", "zf5"] if _has_option(command, "--backbone") else []
    result = invoke("-w", tmp_path / "empty", *_dataset_commands(tiny_voc)[command], *extra)
    assert result.exit_code == 1, (command, result.output)
    assert result.output.startswith("Error: ") and "sppdet " in result.output


def test_a_bad_config_file_is_an_error_naming_the_file_and_the_key(tiny_voc, tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("jobs: two\n")
    result = invoke("-w", tmp_path / "work", "pipeline", tiny_voc, "--config", config)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {config}: key 'jobs': expected an integer")
    assert not (tmp_path / "work").exists()


def test_a_device_that_is_not_here_is_a_usage_error(tiny_voc, tmp_path) -> None:
    # the name parses; the library finds no such device and raises a ParameterError, which the
    # command line shows as a bad value of its --device option
    result = invoke("-w", tmp_path / "work", "cache-features", tiny_voc, "--backbone", "zf5",
                    "--scales", "48", "--device", "cuda:7")
    assert result.exit_code == 2
    assert "Invalid value for '--device'" in result.output


def test_library_messages_name_no_flag() -> None:
    for call in (lambda: parse_shard("3/2"), lambda: parse_shard("half"),
                 lambda: check_device_name("gpu"), lambda: resolve_device("cuda:7")):
        with pytest.raises(ConfigError) as caught:
            call()
        assert "--" not in str(caught.value)
    with pytest.raises(ParameterError) as caught:
        check_device_name("tpu")
    assert caught.value.param == "device"
