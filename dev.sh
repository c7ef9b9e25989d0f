#!/usr/bin/env bash
# The project's two commands (see README):
#   ./dev.sh demo [job flags]   set up .venv, then preprocess the bundled synthetic demo corpus
#   ./dev.sh test [pytest args] set up .venv, then lint and run the test suite
#   ./dev.sh setup              only set up .venv
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

setup() {
  [ -x .venv/bin/python ] || "$(python_311)" -m venv .venv
  # Re-install only when the declared dependencies changed.
  stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch first, by exact version: on CPU machines pip takes the CPU build; a GPU user installs
    # the CUDA build of the same version before running this (README, "GPU").
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[dev]"
    rm -f .venv/.installed-* && touch "$stamp"
  fi
}

cmd="${1:-help}"; shift || true
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    exec .venv/bin/python jobs/preprocess.py --demo --output data/demo/shards "$@" ;;
  test)
    setup
    .venv/bin/python -m ruff check pipeline models jobs bench tests
    exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
