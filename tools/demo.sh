#!/usr/bin/env bash
# Install sppdet into .venv and run the demo: synthetic data through the whole pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install.sh
exec .venv/bin/sppdet --work-dir "${SPPDET_WORK_DIR:-sppdet-work}" demo "$@"
