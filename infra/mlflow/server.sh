#!/usr/bin/env bash
# The shared tracking server of a cluster: PostgreSQL for runs and the registry, artefacts
# through the server (--serve-artifacts) into an S3-compatible store or a folder, and a login
# (MLflow's basic-auth app) for every call.
#
#   MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:...@db:5432/mlflow \
#   MLFLOW_ARTIFACTS_DESTINATION=s3://mlflow-artifacts \
#   MLFLOW_AUTH_ADMIN_PASSWORD=... MLFLOW_HOST=0.0.0.0 MLFLOW_ALLOWED_HOSTS=mlflow.internal:5000 \
#   infra/mlflow/server.sh [more mlflow server flags]
#
# Settings (environment):
#   MLFLOW_BACKEND_STORE_URI      required: the runs and the registry (postgresql://...)
#   MLFLOW_ARTIFACTS_DESTINATION  required: s3://bucket[/prefix] (with MLFLOW_S3_ENDPOINT_URL for a
#                                 store other than AWS, and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or a folder
#   MLFLOW_AUTH_ADMIN_PASSWORD    required: the admin's password (at least 12 characters), or
#   MLFLOW_AUTH_ADMIN_PASSWORD_FILE  a file holding it (a Kubernetes Secret mounted as a file)
#   MLFLOW_AUTH_ADMIN_USERNAME    default admin
#   MLFLOW_AUTH_DATABASE_URI      the users and permissions (default: sqlite in MLFLOW_ROOT)
#   MLFLOW_AUTH_DEFAULT_PERMISSION  what a user may do with another's experiments and models: READ
#                                 (default), EDIT, MANAGE or NO_PERMISSIONS
#   MLFLOW_HOST, MLFLOW_PORT      default 127.0.0.1:5000
#   MLFLOW_ALLOWED_HOSTS          the Host headers served (required when MLFLOW_HOST is not loopback)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  signs the login's CSRF tokens; the same for every replica (default:
#                                 made once, kept in MLFLOW_ROOT)
#   MLFLOW_ROOT                   this server's own files (default runs/mlflow-production), 0700
# Nothing secret is printed: the auth settings go to a 0600 file that only the server reads.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
mlflow="${MLFLOW_BIN:-$root/.venv/bin/mlflow}"
command -v "$mlflow" >/dev/null 2>&1 || mlflow="$(command -v mlflow)"
fail() { echo "error: $*" >&2; exit 2; }

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql://user:password@host:5432/db)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/prefix or a folder)}"
password="${MLFLOW_AUTH_ADMIN_PASSWORD:-}"
if [ -z "$password" ] && [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD_FILE:-}" ]; then
  password="$(cat "$MLFLOW_AUTH_ADMIN_PASSWORD_FILE")"
fi
[ -n "$password" ] || fail "set MLFLOW_AUTH_ADMIN_PASSWORD (or MLFLOW_AUTH_ADMIN_PASSWORD_FILE): the server never starts without a login"
case "$password" in
  password1234|password|admin|changeme) fail "MLFLOW_AUTH_ADMIN_PASSWORD is a well-known default: choose another" ;;
esac
[ "${#password}" -ge 12 ] || fail "MLFLOW_AUTH_ADMIN_PASSWORD must have at least 12 characters"
permission="${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}"
case "$permission" in READ|EDIT|MANAGE|NO_PERMISSIONS) ;; *) fail "MLFLOW_AUTH_DEFAULT_PERMISSION=$permission is not READ, EDIT, MANAGE or NO_PERMISSIONS" ;; esac

host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
case "$host" in
  127.*|localhost|::1) allowed="${MLFLOW_ALLOWED_HOSTS:-localhost:$port,127.0.0.1:$port,localhost,127.0.0.1}" ;;
  *) allowed="${MLFLOW_ALLOWED_HOSTS:?MLFLOW_HOST=$host is reachable from other machines: set MLFLOW_ALLOWED_HOSTS to the names clients use}" ;;
esac

umask 077
data="${MLFLOW_ROOT:-$root/runs/mlflow-production}"
mkdir -p "$data"
chmod 700 "$data"
case "$MLFLOW_ARTIFACTS_DESTINATION" in
  *://*) ;;
  *) mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION" ;;
esac
# the key that signs the login app's CSRF tokens: given (the same for every replica), else made once here
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
  [ -s "$data/flask_secret_key" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$data/flask_secret_key"
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$data/flask_secret_key")"
fi
export MLFLOW_FLASK_SERVER_SECRET_KEY
ini="$data/basic_auth.ini"
cat > "$ini" <<INI
[mlflow]
default_permission = $permission
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$data/basic_auth.db}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
chmod 600 "$ini"
export MLFLOW_AUTH_CONFIG_PATH="$ini" MLFLOW_AUTH_ADMIN_PASSWORD="$password"
exec "$mlflow" server --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
  --host "$host" --port "$port" --allowed-hosts "$allowed" "$@"
