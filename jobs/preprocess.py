"""Preprocess a song corpus into Parquet shards for training.

    python jobs/preprocess.py --input corpus/manifest.csv --output data/shards
    python jobs/preprocess.py --demo --output data/shards          # synthetic demo corpus
    ray job submit --working-dir . -- python jobs/preprocess.py --input ... --output ...

Runs an embedded local Ray unless --ray_address or $RAY_ADDRESS names a cluster; logs to
MLflow at $MLFLOW_TRACKING_URI or a sqlite store in the runs folder
($JUKEBOX_RUNS_DIR, else ./runs, else ~/.local/share/jukebox/runs under ray job submit).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from pipeline.cli import run_job  # noqa: E402
from pipeline.preprocess.config import PreprocessConfig  # noqa: E402
from pipeline.preprocess.run import run_preprocess  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(PreprocessConfig, run_preprocess, __doc__,
                     succeeded=lambda s: s["inputs"] == s["ok"] + s["quarantined"] + s["skipped_existing"]))
