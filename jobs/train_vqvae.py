"""Train one VQ-VAE level on preprocessed shards, track it in MLflow, register it.

    python jobs/train_vqvae.py --config infra/train/vqvae-tiny.yaml --level bottom --shards data/shards   # a laptop
    python jobs/train_vqvae.py --config infra/train/vqvae-tiny.yaml --level middle --shards data/shards --optim.lr 1e-3
    python jobs/train_vqvae.py --level top --shards data/shards --runtime.workers 2 --runtime.zero_stage 3      # the paper's
    ray job submit --working-dir . -- python jobs/train_vqvae.py --level bottom --shards /shared/shards

Runs an embedded local Ray unless --ray_address or $RAY_ADDRESS names a cluster; logs to
MLflow at $MLFLOW_TRACKING_URI or a sqlite store in the runs folder
($JUKEBOX_RUNS_DIR, else ./runs, else ~/.local/share/jukebox/runs under ray job submit), and registers the model as
jukebox-vqvae-<level> with the alias 'current' (see --register, --alias). Re-running with
the same --checkpoint.run_name resumes that run from its last checkpoint (the one Ray
restores; the data stream starts at its step). Sections: --runtime.* (workers, ZeRO,
precision, batch, steps, logging), --optim.* (AdamW, schedule, clipping), --checkpoint.*
(where, how often, what is kept). infra/train/vqvae-{tiny,paper}.yaml are the two presets; a model
whose training state cannot fit where it would run is refused before any worker starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from pipeline.cli import run_job  # noqa: E402
from pipeline.train.vqvae_job import TrainVQVAEConfig, main_summary  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(TrainVQVAEConfig, main_summary, __doc__))
