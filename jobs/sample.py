"""Sample songs from the registered models: the top prior, then the two upsamplers, decoded with
the bottom VQ-VAE; WAVs, codes and a page that plays them, logged to MLflow.

    python jobs/sample.py --artist "Some Artist" --genre rock --lyrics lyrics.txt --duration 20 --out runs/samples/a
    python jobs/sample.py --levels top --duration 60 --n_samples 4 --temperature 0.99 --out runs/samples/top
    python jobs/sample.py --prime intro.wav --prime_seconds 8 --duration 30 --out runs/samples/primed
    python jobs/sample.py --top_codes runs/samples/top/codes/top.npy --duration 60 --workers 2 --out runs/samples/up
    python jobs/sample.py --models.top models:/jukebox-prior-top/3 --cfg 1.5 --artist "Some Artist" --out runs/samples/b
    ray job submit --working-dir . -- python jobs/sample.py --workers 4 --out /shared/samples/a

Models come from the MLflow registry (--models.top/middle/bottom, default @current; the VQ-VAEs
default to the ones each prior was trained on) and are checked to fit together before anything is
sampled; artist and genre are names from the training corpus (an unknown one is refused with the
closest known names). Codes are saved after every window: rerunning the same command into the
same --out continues a killed run and ends with the same audio.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from pipeline.cli import run_job  # noqa: E402
from pipeline.sample.config import SampleConfig  # noqa: E402
from pipeline.sample.run import main_summary  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(SampleConfig, main_summary, __doc__))
