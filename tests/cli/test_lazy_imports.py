"""``import sppdet.cli`` and every ``--help`` load no heavy library (issue 13, item 5).

Each check runs in a fresh interpreter: the test process itself has long imported torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "cv2", "h5py", "matplotlib", "sklearn", "scipy", "numpy",
         "joblib", "tqdm", "yaml", "PIL")


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_the_cli_loads_no_heavy_library() -> None:
    # the exact check of the issue, plus the other libraries a command may need
    out = _python("import sppdet.cli; import sys; print(sorted(m for m in ('torch',"
                  "'torchvision','cv2','h5py','matplotlib','sklearn') if m in sys.modules))")
    assert out.strip() == "[]"
    out = _python(f"import sppdet.cli, sys; print(sorted(m for m in {HEAVY!r} "
                  "if m in sys.modules))")
    assert out.strip() == "[]"


def test_every_help_loads_no_heavy_library() -> None:
    code = f"""
import contextlib, io, json, sys
from sppdet.cli import cli
names = sorted(cli.commands)
usages = []
for args in [["--help"]] + [[name, "--help"] for name in names]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(args, prog_name="sppdet", standalone_mode=False)
    usages.append(out.getvalue().splitlines()[0])
loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"names": names, "usages": usages, "loaded": loaded}}))
"""
    report = json.loads(_python(code).strip().splitlines()[-1])
    assert len(report["names"]) >= 16
    assert report["usages"][0].startswith("Usage: sppdet [OPTIONS] COMMAND")
    for name, usage in zip(report["names"], report["usages"][1:]):
        assert usage.startswith(f"Usage: sppdet {name} [OPTIONS]"), (name, usage)
    assert report["loaded"] == []


def test_python_dash_m_sppdet_is_the_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "sppdet", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: sppdet ") and "cache-features" in result.stdout
    result = subprocess.run([sys.executable, "-m", "sppdet", "no-such-command"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "No such command" in result.stderr
