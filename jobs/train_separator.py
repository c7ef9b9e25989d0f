"""Train a Spleeter 2-stem separator from (mixture, vocals, accompaniment) stems and register it.

    python jobs/train_separator.py --input stems.csv --output models/separator-v1
    python jobs/preprocess.py --input corpus.csv --output shards --separate.model models:/jukebox-separator@current

Needs the Spleeter environment (./dev.sh spleeter-env). Logs to MLflow at
$MLFLOW_TRACKING_URI or a sqlite store in the runs folder
($JUKEBOX_RUNS_DIR, else ./runs, else ~/.local/share/jukebox/runs under ray job submit), and registers the model as
jukebox-separator with the alias 'current' (see --register, --alias).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from pipeline.cli import run_job  # noqa: E402
from pipeline.separate.train import TrainSeparatorConfig, train_separator  # noqa: E402


def _train_and_print(cfg: TrainSeparatorConfig) -> dict:
    summary = train_separator(cfg)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(run_job(TrainSeparatorConfig, _train_and_print, __doc__))
