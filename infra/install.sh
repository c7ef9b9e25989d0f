#!/usr/bin/env bash
# How the project is installed, in one place: ./dev.sh (a checkout's .venv) and the container image
# (infra/docker/Dockerfile) both call this, so the two cannot drift.
#
#   infra/install.sh system                   Debian packages: espeak-ng (the default aligner's voice),
#                                             and with --test also chromium and postgresql (the tests')
#   infra/install.sh project PYTHON EXTRAS    torch, then this project with its EXTRAS (dev, server),
#                                             into PYTHON's environment; DeepSpeed's CPU ops built there
#   infra/install.sh numba-caches PYTHON      librosa's compiled kernels, built once in one process
#   infra/install.sh spleeter FOLDER          the Spleeter environment (TensorFlow 2.12) at FOLDER
#
# TORCH_INDEX_URL picks the torch build (default: PyPI, the CPU build on a machine without CUDA;
# the image's GPU variant passes PyTorch's CUDA index). Run from anywhere: paths are the checkout's.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
TORCH_VERSION="2.13.0"
RAY_VERSION="2.60.0"

system() {
  local want="espeak-ng" missing=""
  [ "${1:-}" = "--test" ] && want="$want chromium postgresql"
  for pkg in $want; do
    case "$pkg" in
      espeak-ng) ldconfig -p 2>/dev/null | grep -q libespeak-ng || missing="$missing $pkg" ;;
      chromium) command -v chromium >/dev/null 2>&1 || missing="$missing $pkg" ;;
      postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing="$missing $pkg" ;;
    esac
  done
  [ -z "$missing" ] && return
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  # a package that cannot be installed is a warning, not a failed set-up: each has a fallback
  if ! command -v apt-get >/dev/null 2>&1 || ! { $sudo apt-get update -qq >/dev/null &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
    echo "warning: missing system packages:$missing (apt-get install$missing): the tts_dtw aligner falls back to" \
         "vocal_activity without espeak-ng; the sample page's browser test needs chromium; the tracking server's" \
         "test needs postgresql" >&2
  fi
}

project() {
  local python="$1" extras="${2:-}"
  "$python" -m pip install -q --upgrade pip
  # torch first, by exact version: on CPU machines PyPI gives the CPU build; a GPU user installs the
  # CUDA build of the same version first (README, "GPU"), or sets TORCH_INDEX_URL
  "$python" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$TORCH_VERSION"
  "$python" -m pip install -q -e "$here${extras:+[$extras]}"
  deepspeed_ops "$python"
  numba_caches "$python"
}

# DeepSpeed JIT-compiles its CPU Adam (ZeRO-Offload) and its shared-memory collectives (every CPU
# run) on first use, ~60 s each on 2 cores: once here, not in a job or a test. They live in this
# environment's own folder (pipeline/services.py use_venv_torch_extensions): in the shared default,
# two environments on one host rebuild each other's ops on every run.
deepspeed_ops() {
  local python="$1"
  export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$("$python" -c 'import sys; print(sys.prefix)')/torch_extensions}"
  compgen -G "$TORCH_EXTENSIONS_DIR/cpu_adam/*.so" >/dev/null ||
    "$python" -c "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load(verbose=False)" >/dev/null
  compgen -G "$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/*.so" >/dev/null ||
    DS_ACCELERATOR=cpu "$python" -c "from deepspeed.accelerator import get_accelerator as a
a().create_op_builder('ShareMemCommBuilder').load(verbose=False)" >/dev/null
}

# librosa compiles its numba gufuncs on its first import and caches them beside its code. Ray workers
# importing it at the same moment in a new environment race on that cache (numba issue 10128) and can
# leave it corrupt, after which every call into it (chroma's tuning estimate, peak picking) kills
# the process with SIGSEGV. So they are compiled here, in one process; a cache that fails the check
# (left corrupt by such a race earlier) is deleted and built again.
numba_caches() {
  local python="$1" check='import numpy as np, librosa
y = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
librosa.estimate_tuning(y=y, sr=22050); librosa.zero_crossings(y); librosa.util.localmin(y)
librosa.util.peak_pick(y, pre_max=3, post_max=3, pre_avg=3, post_avg=3, delta=0.1, wait=1)'
  # the subshell keeps bash's "Segmentation fault" line off the console
  ( "$python" -c "$check" >/dev/null; exit $? ) 2>/dev/null && return
  echo "librosa's numba cache failed its check: rebuilding it" >&2
  find "$("$python" -c "import importlib.util as u; print(u.find_spec('librosa').submodule_search_locations[0])")" \
    -name '*.nb[ic]' -delete
  "$python" -c "$check"
}

# Spleeter pins TensorFlow 2.12, numpy<2 and pandas<2, which clash with torch/ray/mlflow: it gets
# its own environment, with the same Ray as the project's (Ray runs the separation actors in it).
# ray[data]'s declared pandas/pyarrow minimums conflict with Spleeter's metadata, so those few go
# in without the resolver (versions checked together).
spleeter() {
  local folder="$1" python="${PYTHON:-python3}"
  [ -x "$folder/bin/python" ] || "$python" -m venv "$folder"
  "$folder/bin/python" -m pip install -q --upgrade pip
  "$folder/bin/python" -m pip install -q spleeter==2.4.2 "ray==$RAY_VERSION" soundfile==0.14.0 soxr==1.1.0 pyyaml==6.0.3
  "$folder/bin/python" -m pip install -q --no-deps numpy==1.24.3 pandas==2.2.3 pyarrow==17.0.0 fsspec==2026.9.0
  "$folder/bin/python" -c "import spleeter, tensorflow, ray, pyarrow, soundfile, soxr, yaml" 2>/dev/null
}

case "${1:-}" in
  system) shift; system "$@" ;;
  project) shift; project "$@" ;;
  spleeter) shift; spleeter "$@" ;;
  deepspeed-ops) shift; deepspeed_ops "$@" ;;
  numba-caches) shift; numba_caches "$@" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
