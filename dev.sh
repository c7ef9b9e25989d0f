#!/usr/bin/env bash
# The project's two commands (see README):
#   ./dev.sh demo [job flags]   set up .venv, then run the whole pipeline on the bundled demo corpus (tiny models)
#   ./dev.sh test [pytest args] set up .venv, then lint and run the test suite
#   ./dev.sh setup              only set up .venv
#   ./dev.sh spleeter-env       build .venv-spleeter (Spleeter 2.4.2 + TensorFlow 2.12, ~3 GB), used by the separation stage
set -euo pipefail
cd "$(dirname "$0")"

python_311() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$candidate"; return
    fi
  done
  echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1
}

# What is installed, and how, lives in infra/install.sh (the container image runs the same script).
setup() {
  infra/install.sh system --test
  [ -x .venv/bin/python ] || "$(python_311)" -m venv .venv
  # Re-install only when the declared dependencies or the install script changed.
  stamp=".venv/.installed-$(cat pyproject.toml infra/install.sh | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    infra/install.sh project .venv/bin/python dev
    rm -f .venv/.installed-* && touch "$stamp"
  fi
  TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}" infra/install.sh deepspeed-ops .venv/bin/python
  infra/install.sh numba-caches .venv/bin/python
}

setup_spleeter() {
  stamp=".venv-spleeter/.installed-$(grep -A12 '^spleeter()' infra/install.sh | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return
  PYTHON="$(python_311)" infra/install.sh spleeter .venv-spleeter
  rm -f .venv-spleeter/.installed-* && touch "$stamp"
}

cmd="${1:-help}"; shift || true
case "$cmd" in
  setup) setup ;;
  spleeter-env) setup_spleeter ;;
  demo)
    setup
    exec .venv/bin/python jobs/pipeline.py --config infra/pipeline/demo.yaml --input demo --output runs/demo "$@" ;;
  test)
    setup
    setup_spleeter
    .venv/bin/python -m ruff check pipeline models jobs bench tests
    exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@" ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
