#!/usr/bin/env bash
# Set up (once), then run the whole demo pipeline: synthetic cohort -> report.
# Extra arguments go to snakemake (e.g. --cores 2, --configfile config/tiny.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake --cores "${CORES:-8}" "$@"
echo "Report: $PWD/results/demo/report/index.html"
echo "MLflow: mlflow ui --backend-store-uri sqlite:///$PWD/results/mlflow/mlflow.db"
