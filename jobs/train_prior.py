"""Train the top prior (with lyrics) or an upsampler on the codes of registered VQ-VAEs, track it
in MLflow, register it.

    python jobs/train_prior.py --config infra/train/prior-tiny.yaml --level top --shards data/shards     # a laptop
    python jobs/train_prior.py --config infra/train/prior-few-songs.yaml --level top --shards data/shards  # a handful of songs
    python jobs/train_prior.py --config infra/train/prior-tiny.yaml --level middle --vqvae models:/jukebox-vqvae-middle/3 \
        --shards data/shards
    ray job submit --working-dir . -- python jobs/train_prior.py --level top --shards /shared/shards \
        --runtime.use_gpu true --runtime.workers 64 --runtime.zero_stage 3                         # the paper's 5 B prior

Needs the level's VQ-VAE in the registry (default models:/jukebox-vqvae-<level>@current; the
upsamplers also the upper level's): their cards are checked against the prior before any
worker starts. The corpus is encoded once per VQ-VAE version into a code cache
(<shards>/codes/<vqvae>-v<N>/, reused by later runs, resumed when killed). Runs an embedded
local Ray unless --ray_address or $RAY_ADDRESS names a cluster; logs to MLflow at
$MLFLOW_TRACKING_URI or a sqlite store in the runs folder
($JUKEBOX_RUNS_DIR, else ./runs, else ~/.local/share/jukebox/runs under ray job submit); registers jukebox-prior-<level> with the
alias 'current' and lineage tags (VQ-VAE versions, code caches, vocabulary version).
Sections: --model.*, --runtime.*, --optim.*, --checkpoint.* as in jobs/train_vqvae.py. The paper's
presets (the default) are for GPUs: where the model cannot fit, the job stops in seconds with the
memory it needs per rank and what to use instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from pipeline.cli import run_job  # noqa: E402
from pipeline.train.prior_job import TrainPriorConfig, main_summary  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(TrainPriorConfig, main_summary, __doc__))
