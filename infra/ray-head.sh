#!/usr/bin/env bash
# Start a Ray head node for this project and block; stop it with SIGTERM to this process
# (never `ray stop` on a shared host: it kills every Ray process on the machine).
#   RAY_PORT=6379 RAY_DASHBOARD_PORT=8265 RAY_NUM_CPUS=16 infra/ray-head.sh
# (RAY_DASHBOARD_AGENT_PORT, default 52365: the job agent's port; another Ray on the host may hold the default)
#
# Secure by default (pipeline/ray_auth.py):
# - Token auth is always on (RAY_AUTH_MODE=token). The token file is $RAY_AUTH_TOKEN_PATH,
#   default ~/.ray/auth_token, created with mode 0600 if missing; only its path is printed.
#   Clients (ray job submit, jobs/*.py --ray_address) need RAY_AUTH_MODE=token and the same file.
# - Every port (GCS, raylet, Ray Client, dashboard and its job agent) listens on 127.0.0.1,
#   and such a head takes no worker nodes. For a multi-node cluster set RAY_HEAD_HOST to this
#   node's address on the cluster's private network, copy the token file (0600) to each node, and
#   start workers with: RAY_AUTH_MODE=token ray start --address <head>:$RAY_PORT --block
# - The dashboard/job API stays on 127.0.0.1 unless RAY_DASHBOARD_HOST says otherwise; reach it
#   through an SSH tunnel (CVE-2023-48022: an open job API runs anyone's code).
#
# Durable defaults: a job submitted with `ray job submit --working-dir .` runs in a temporary copy
# of the working dir, deleted with the job. Its driver inherits this head's environment, so
# JUKEBOX_RUNS_DIR (default: this checkout's runs/) is where a job keeps its default MLflow store,
# checkpoints and samples, and MLFLOW_TRACKING_URI, if exported here (e.g. the server of
# infra/mlflow-server.sh), is every job's tracking store. A client's environment is not passed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export JUKEBOX_RUNS_DIR="${JUKEBOX_RUNS_DIR:-$root/runs}"
export PATH="$root/.venv/bin:$PATH"   # the entrypoint's `python` is the project's environment
host="${RAY_HEAD_HOST:-127.0.0.1}"
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN_PATH="$(cd "$root" && python -m pipeline.ray_auth token)"
export RAY_AUTH_TOKEN_PATH
echo "ray-head: token auth on, token file $RAY_AUTH_TOKEN_PATH; listening on $host; jobs keep runs in $JUKEBOX_RUNS_DIR" >&2
if python -c "import sys; from pipeline.ray_auth import is_loopback; sys.exit(not is_loopback(sys.argv[1]))" "$host"; then
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # Ray's switch that keeps a loopback node address as given
fi
args=(--head --block --node-ip-address="$host" --port="${RAY_PORT:-6379}"
      --dashboard-host="${RAY_DASHBOARD_HOST:-127.0.0.1}" --dashboard-port="${RAY_DASHBOARD_PORT:-8265}"
      --dashboard-agent-listen-port="${RAY_DASHBOARD_AGENT_PORT:-52365}" --disable-usage-stats)
[ -n "${RAY_NUM_CPUS:-}" ] && args+=(--num-cpus="$RAY_NUM_CPUS")
exec ray start "${args[@]}"
