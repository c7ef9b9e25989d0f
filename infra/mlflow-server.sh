#!/usr/bin/env bash
# A tracking server on one host, sqlite and a local artefact folder (the production server, with
# PostgreSQL, an S3-compatible artefact store and a login, is infra/mlflow/server.sh).
#   MLFLOW_ROOT=/shared/mlflow MLFLOW_PORT=5000 infra/mlflow-server.sh [more mlflow server flags]
# It listens on 127.0.0.1 unless MLFLOW_HOST says otherwise, and a host other than loopback is
# refused without a login (--app-name basic-auth): anyone who reaches an open server can read or
# delete every run and move the aliases that training and sampling load by default.
# --artifacts-destination (not --default-artifact-root with a local path) makes clients upload
# artefacts through the server instead of writing to their own disks.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${MLFLOW_ROOT:-$root/runs/mlflow-server}"
host="${MLFLOW_HOST:-127.0.0.1}"
case "$host" in
  127.*|localhost|::1) ;;
  *) case " $* " in
       *" --app-name basic-auth "*|*" --app-name=basic-auth "*) ;;
       *) echo "error: MLFLOW_HOST=$host is reachable from other machines; add --app-name basic-auth" \
               "(and MLFLOW_AUTH_ADMIN_PASSWORD), or use infra/mlflow/server.sh" >&2; exit 2 ;;
     esac ;;
esac
umask 077  # the store, the artefacts and the auth database: this user's only
mkdir -p "$data/artifacts"
chmod 700 "$data"
exec "$root/.venv/bin/mlflow" server --backend-store-uri "sqlite:///$data/mlflow.db" \
  --artifacts-destination "$data/artifacts" --host "$host" --port "${MLFLOW_PORT:-5000}" "$@"
