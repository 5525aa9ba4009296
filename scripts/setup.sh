#!/usr/bin/env bash
# Create .venv and install sr7t into it, once (again only when pyproject.toml changes).
# Torch: a CPU build where none is installed (torch==2.13.0 resolves to a local CPU wheel on
# our machines); set SR7T_TORCH to another pip spec, or preinstall your own CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
# Real anatomy for the demo, offline, from Debian (paths in src/sr7t/cohort/anatomy.py):
# mricron-data (Colin27, the demo's held-out test brain; INIA19, its second validation brain)
# and insighttoolkit5-examples (a real 2x2x3 mm routine head T1). Installed only as root with
# apt-get; otherwise one line, and the demo runs without its Colin27 and INIA19 subjects.
if [ ! -f /usr/share/mricron/templates/ch2bet.nii.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "sr7t setup: installing Debian mricron-data, insighttoolkit5-examples (real anatomy)" >&2
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq \
      && apt-get install -y -qq mricron-data insighttoolkit5-examples >/dev/null) \
      || echo "sr7t setup: WARNING: mricron-data could not be installed; the demo runs without Colin27" >&2
  else
    echo "sr7t setup: Colin27 missing (as root: apt-get install mricron-data insighttoolkit5-examples); the demo runs without it" >&2
  fi
fi
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
