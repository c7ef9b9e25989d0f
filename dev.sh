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

# espeak-ng (C library + voices) is what the offline default aligner speaks the lyrics with;
# chromium is the headless browser the sample page's test plays its audio in; PostgreSQL is the
# production tracking server's database, which its test starts.
system_packages() {
  local missing=""
  ldconfig -p 2>/dev/null | grep -q libespeak-ng || missing="espeak-ng"
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || missing="$missing postgresql"
  [ -z "$missing" ] && return
  local apt=""
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt=""
  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt="sudo"
  else
    apt="none"
  fi
  # a package that cannot be installed is a warning, not a failed set-up: each has a fallback
  if [ "$apt" = none ] || ! { $apt apt-get update -qq >/dev/null &&
      $apt env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
    echo "warning: missing system packages:$missing (apt-get install espeak-ng chromium postgresql);" \
         "the tts_dtw aligner falls back to vocal_activity without espeak-ng; the sample page's browser test needs chromium;" \
         "the tracking server's test needs postgresql" >&2
  fi
}

setup() {
  system_packages
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
  # DeepSpeed JIT-compiles its CPU Adam (ZeRO-Offload) and its shared-memory collectives (every CPU
  # run) on first use, ~60 s each on 2 cores: once here, not in a job or a test. They live in this
  # environment's own folder (pipeline/services.py use_venv_torch_extensions): in the shared
  # default, two environments on one host rebuild each other's ops on every run.
  export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}"
  compgen -G "$TORCH_EXTENSIONS_DIR/cpu_adam/*.so" >/dev/null ||
    .venv/bin/python -c "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load(verbose=False)" >/dev/null
  compgen -G "$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/*.so" >/dev/null ||
    DS_ACCELERATOR=cpu .venv/bin/python -c "from deepspeed.accelerator import get_accelerator as a
a().create_op_builder('ShareMemCommBuilder').load(verbose=False)" >/dev/null
}

# Spleeter pins TensorFlow 2.12, numpy<2 and pandas<2, which clash with torch/ray/mlflow:
# it gets its own environment, with the same Ray as the project's (Ray runs the separation
# actors in it). ray[data]'s declared pandas/pyarrow minimums conflict with Spleeter's
# metadata, so those few go in without the resolver (versions checked together).
setup_spleeter() {
  stamp=".venv-spleeter/.installed-$(declare -f setup_spleeter | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return
  [ -x .venv-spleeter/bin/python ] || "$(python_311)" -m venv .venv-spleeter
  .venv-spleeter/bin/python -m pip install -q --upgrade pip
  .venv-spleeter/bin/python -m pip install -q spleeter==2.4.2 ray==2.60.0 soundfile==0.14.0 soxr==1.1.0 pyyaml==6.0.3
  .venv-spleeter/bin/python -m pip install -q --no-deps numpy==1.24.3 pandas==2.2.3 pyarrow==17.0.0 fsspec==2026.9.0
  .venv-spleeter/bin/python -c "import spleeter, tensorflow, ray, pyarrow, soundfile, soxr, yaml" 2>/dev/null
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
