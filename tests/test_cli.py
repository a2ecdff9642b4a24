"""The command line through Click's CliRunner: exit codes, messages, global options."""

import json

from click.testing import CliRunner

from sppdet import __version__
from sppdet.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output
    result = invoke("--help")
    assert result.exit_code == 0
    assert "--work-dir" in result.output and "[default: sppdet-work]" in result.output
    assert "inspect-data" in result.output


def test_every_command_has_help_with_defaults():
    for name, command in cli.commands.items():
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert command.help, f"{name} has no help text"


def test_usage_errors_exit_2(tiny_voc):
    assert invoke("no-such-command").exit_code == 2
    assert invoke("inspect-data").exit_code == 2  # missing DATASET
    assert invoke("inspect-data", "/definitely/not/here").exit_code == 2
    assert invoke("-q", "-v", "inspect-data", str(tiny_voc)).exit_code == 2


def test_library_error_is_clean_exit_1(tiny_voc):
    result = invoke("inspect-data", str(tiny_voc), "--split", "nosuch")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "nosuch.txt: split file not found" in result.output
    assert "Traceback" not in result.output


def test_debug_prints_traceback(tiny_voc):
    result = CliRunner().invoke(cli, ["--debug", "inspect-data", str(tiny_voc), "--split", "x"])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "DataError" in result.output


def test_inspect_data_report_and_json(tiny_voc, tmp_path):
    out = tmp_path / "report.json"
    result = invoke("inspect-data", str(tiny_voc), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "3 images, 2 classes" in result.output and "Problems: none" in result.output
    report = json.loads(out.read_text())
    assert report["per_class"]["circle"] == {"objects": 2, "difficult": 1, "truncated": 0,
                                             "images": 2}
    assert report["image_sizes"] == {"64x48": 3}


def test_inspect_data_finds_unreadable_image_and_strict_fails(tiny_voc):
    (tiny_voc / "JPEGImages" / "img2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = invoke("inspect-data", str(tiny_voc))
    assert result.exit_code == 0
    assert "[image-unreadable]" in result.output and "img2.jpg" in result.output
    result = invoke("inspect-data", str(tiny_voc), "--strict")
    assert result.exit_code == 1 and "Error: 1 severe problem(s)" in result.output


def test_inspect_data_size_mismatch(tiny_voc):
    xml = tiny_voc / "Annotations" / "img1.xml"
    xml.write_text(xml.read_text().replace("<width>64</width>", "<width>65</width>"))
    result = invoke("inspect-data", str(tiny_voc))
    assert "[size-mismatch]" in result.output and "image is 64x48 but the XML says 65x48" in result.output


def test_make_demo_data_twice_gives_identical_annotations(tmp_path):
    args = ["--n-trainval", "4", "--n-test", "2", "--seed", "7"]
    for name in ("a", "b"):
        result = invoke("make-demo-data", str(tmp_path / name), *args)
        assert result.exit_code == 0, result.output
    xml_a = sorted((tmp_path / "a" / "Annotations").glob("*.xml"))
    assert len(xml_a) == 6
    for path in xml_a:
        assert path.read_bytes() == (tmp_path / "b" / "Annotations" / path.name).read_bytes()
    result = invoke("inspect-data", str(tmp_path / "a"), "--split", "test", "--strict")
    assert result.exit_code == 0 and "2 images, 6 classes" in result.output


def test_make_demo_data_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = invoke("make-demo-data", str(tmp_path / "mine"), "--n-trainval", "2", "--n-test", "1")
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
