#!/usr/bin/env bash
# The tracking server a cluster's jobs log to (point them at it with MLFLOW_TRACKING_URI).
#   MLFLOW_ROOT=/shared/mlflow MLFLOW_PORT=5000 infra/mlflow-server.sh
# --artifacts-destination (not --default-artifact-root with a local path) makes clients
# upload artefacts through the server instead of writing to their own disks.
# For auth, add --app-name basic-auth (needs the mlflow[auth] extra and its admin settings).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${MLFLOW_ROOT:-$root/runs/mlflow-server}"
mkdir -p "$data/artifacts"
exec "$root/.venv/bin/mlflow" server --backend-store-uri "sqlite:///$data/mlflow.db" \
  --artifacts-destination "$data/artifacts" --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}"
