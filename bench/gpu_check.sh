#!/usr/bin/env bash
# The first hour on a GPU, as one command (about 8 minutes on one GPU): the demo pipeline on the
# GPU, the VQ-VAE and prior step benchmarks in bf16, and compiled sampling with CUDA graphs, into
# one JSON (runs/gpu_check/gpu_check.json unless --out).
#   bash bench/gpu_check.sh [--out DIR] [--device cuda|cpu] [--parts demo,vqvae_step,prior_step,sampling] [--quick]
# Run from an installed checkout (./dev.sh setup); see bench/gpu_check.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${JUKEBOX_PYTHON:-.venv/bin/python}
if [ ! -x "$py" ]; then
  echo "no $py: run ./dev.sh setup first (or set JUKEBOX_PYTHON)" >&2
  exit 2
fi
exec "$py" bench/gpu_check.py "$@"
