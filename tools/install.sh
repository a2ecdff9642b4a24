#!/usr/bin/env bash
# Create .venv (if needed) and install sppdet into it with the pinned constraints.
# Usage: tools/install.sh [extra]    e.g. tools/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extra=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
# The constraints pin torch/torchvision to a matched pair and every other direct dependency.
# (pip's notes about unreachable local index folders of some machines are filtered out)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$spec" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
