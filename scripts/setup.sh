#!/usr/bin/env bash
# Create .venv and install sr7t into it, once (again only when pyproject.toml changes).
# Torch: a CPU build where none is installed (torch==2.13.0 resolves to a local CPU wheel on
# our machines); set SR7T_TORCH to another pip spec, or preinstall your own CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "sr7t setup: needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "sr7t setup: creating .venv with $PY" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.sr7t-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    .venv/bin/python -m pip install "${SR7T_TORCH:-torch==2.13.0}"
  fi
  .venv/bin/python -m pip install -e ".[test]"
  touch "$stamp"
fi
