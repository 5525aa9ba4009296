#!/usr/bin/env bash
# Set up (once), then run the whole demo pipeline: synthetic cohort -> report.
# Extra arguments go to snakemake (e.g. --cores 2, --configfile config/tiny.yaml).
# Cores: an explicit --cores/-c/--jobs/-j in the arguments, else $CORES, else every core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ncores="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
cores=(--cores "${CORES:-$ncores}")
for arg in "$@"; do
  case "$arg" in
    --cores | --cores=* | -c | -c[0-9]* | --jobs | --jobs=* | -j | -j[0-9]*) cores=() ;;
  esac
done
snakemake ${cores[@]+"${cores[@]}"} "$@"
echo "Report: $PWD/results/demo/report/index.html"
echo "MLflow: mlflow ui --backend-store-uri sqlite:///$PWD/results/mlflow/mlflow.db"
