#!/usr/bin/env bash
# Set up (once), then run the test suite (unit tests + the workflow on config/tiny.yaml).
# Extra arguments go to pytest (e.g. -m "not workflow" for the unit tests alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
python -m pytest -q -ra "$@"
