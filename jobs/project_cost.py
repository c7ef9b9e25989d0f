"""What training the paper's models would cost: FLOPs per step measured on fake tensors, turned
into accelerator-hours and days, memory per device under each ZeRO stage, and the storage of a
corpus, beside the compute Jukebox's authors reported.

    python jobs/project_cost.py
    python jobs/project_cost.py --accelerators A100,H100 --devices 512 --mfu 0.35 --json cost.json

Runs in seconds on a CPU: no weights are allocated.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from pipeline.cli import run_job  # noqa: E402
from pipeline.train.cost import ProjectCostConfig, project_cost  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(ProjectCostConfig, project_cost, __doc__))
