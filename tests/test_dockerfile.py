"""The Dockerfile, parsed with Docker's own parser (no engine runs here)."""

import re
from pathlib import Path

import dockerfile

ROOT = Path(__file__).resolve().parents[1]


def commands():
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def test_base_image_pinned_by_tag():
    froms = [c for c in commands() if c.cmd == "FROM"]
    assert len(froms) == 1
    image = froms[0].value[0]
    name, _, tag = image.partition(":")
    assert tag and tag != "latest", image
    assert "cuda" in image, "the base must be CUDA-capable"


def test_installs_with_the_constraints_file():
    runs = [" ".join(c.value) for c in commands() if c.cmd == "RUN"]
    installs = [r for r in runs if re.search(r"pip install", r)]
    assert installs and all("-c constraints.txt" in r for r in installs)
    copies = [c.value for c in commands() if c.cmd == "COPY"]
    assert any("constraints.txt" in v for v in copies)
    assert "opencv-python " not in (ROOT / "Dockerfile").read_text()


def test_runs_as_non_root_with_sppdet_entrypoint_and_volumes():
    cmds = commands()
    users = [c.value[0] for c in cmds if c.cmd == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = [c for c in cmds if c.cmd == "ENTRYPOINT"]
    assert entry and entry[-1].value == ("sppdet",) and entry[-1].json
    volumes = [v for c in cmds if c.cmd == "VOLUME" for v in c.value]
    assert "/work" in volumes and "/data" in volumes


def test_constraints_pin_every_direct_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line} is not pinned with =="
            pins[name.lower()] = version
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "opencv-python" not in pins and "opencv-contrib-python-headless" in pins
    setup = (ROOT / "setup.cfg").read_text()
    requires = re.search(r"install_requires =\n((?:    .+\n)+)", setup).group(1).split()
    for requirement in requires:
        name = re.split(r"[<>=!~]", requirement)[0].lower()
        assert name in pins, f"{name} is not pinned in constraints.txt"
