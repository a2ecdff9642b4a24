"""Library messages name parameters, never command-line flags (the CLI renders remedies).

Every string literal of ``sppdet/`` and ``stages/`` (f-string parts included) is checked,
except docstrings, which document for developers how the command line maps onto the library.
Remedies' settings are checked against the options of the command they name.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("sppdet", "stages")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

#: ``(file, literal)`` pairs that name a flag and are not messages, each with the reason.
ALLOWED: dict[tuple[str, str], str] = {}

#: Names of stage constants, for remedies that name their stage by constant.
STAGE_CONSTANTS = {"FEATURES_STAGE": "cache-features", "PROPOSALS_STAGE": "propose"}
#: Keywords of ``Remedy.rerun`` that are not settings.
NOT_SETTINGS = {"verb", "purpose", "alternative", "otherwise"}


def _library_files() -> list[Path]:
    return sorted(p for package in LIBRARY for p in (ROOT / package).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _flag_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and FLAG.search(node.value)]


def test_the_scan_finds_a_flag_in_a_message(tmp_path):
    """The scan itself: a message naming a flag is found, a docstring naming one is not."""
    sample = tmp_path / "sample.py"
    sample.write_text('def f(x):\n    """Like ``--force``."""\n'
                      '    raise ValueError(f"{x} is stale; rerun with --force")\n')
    assert _flag_literals(sample) == [(3, " is stale; rerun with --force")]


def test_no_library_message_names_a_flag():
    found = []
    for path in _library_files():
        relative = path.relative_to(ROOT).as_posix()
        for line, text in _flag_literals(path):
            if (relative, text) not in ALLOWED:
                found.append(f"{relative}:{line}: {text!r}")
    assert not found, "library messages naming flags (give the error a Remedy):\n" + \
        "\n".join(found)


def _remedy_calls() -> list[tuple[str, str, list[str]]]:
    """``(where, stage, settings)`` of every ``Remedy.rerun(STAGE, ...)`` naming its stage."""
    calls = []
    for path in _library_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "rerun" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "Remedy" and node.args):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                stage = first.value
            elif isinstance(first, ast.Name) and first.id in STAGE_CONSTANTS:
                stage = STAGE_CONSTANTS[first.id]
            else:
                continue  # a stage known only when it runs (a record's)
            settings = [k.arg for k in node.keywords if k.arg and k.arg not in NOT_SETTINGS]
            calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", stage, settings))
    return calls


def test_remedies_name_commands_and_options_that_exist():
    """A remedy naming a stage renders as that command with its options, not the fallback."""
    from sppdet.cli import cli
    from sppdet.cli.remedies import OPTION_NAMES

    calls = _remedy_calls()
    assert len(calls) >= 10  # the scan finds them
    for where, stage, settings in calls:
        command = cli.commands.get(stage)
        assert command is not None, f"{where}: no command {stage!r}"
        names = {p.name for p in command.params}
        for setting in settings:
            assert OPTION_NAMES.get(setting, setting) in names, \
                f"{where}: `sppdet {stage}` has no option for {setting!r}"

