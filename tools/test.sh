#!/usr/bin/env bash
# Install sppdet with its test extra into .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install.sh test
exec .venv/bin/python -m pytest -q "$@"
