#!/usr/bin/env bash
# Start a Ray head node for this project and block; stop it with SIGTERM to this process
# (never `ray stop` on a shared host: it kills every Ray process on the machine).
#   RAY_PORT=6379 RAY_DASHBOARD_PORT=8265 RAY_NUM_CPUS=16 infra/ray-head.sh
# Workers join with: ray start --address <head>:$RAY_PORT --block  (same .venv, same Ray version)
# Ray 2.60 enables token auth: clients need RAY_AUTH_MODE=token and the token
# (~/.ray/auth_token, or RAY_AUTH_TOKEN). The dashboard/job API listens on 127.0.0.1 only;
# reach it through an SSH tunnel, never expose it unauthenticated (CVE-2023-48022).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$root/.venv/bin:$PATH"   # the entrypoint's `python` is the project's environment
args=(--head --block --port="${RAY_PORT:-6379}" --dashboard-port="${RAY_DASHBOARD_PORT:-8265}" --disable-usage-stats)
[ -n "${RAY_NUM_CPUS:-}" ] && args+=(--num-cpus="$RAY_NUM_CPUS")
exec ray start "${args[@]}"
