"""What both training jobs share: the config fields, their validation, and the one launch path.

``TrainJobConfig`` is embedded in ``TrainVQVAEConfig`` and ``TrainPriorConfig`` (they extend
it), so the shards, hold-out, seed, the runtime/optim/checkpoint sections, tracking and Ray
sizing are declared, bounded and validated in one place. ``launch`` starts (or joins) Ray
sized for the run, refuses a model that cannot fit, and trains and registers it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.config import ConfigError, field
from pipeline.services import RUNS_HELP
from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig
from pipeline.train.protocol import Tracking, TrainingTask, TrainSpec

SMALLER = "Use --preset tiny (or smaller --model.* sizes), more ranks with ZeRO-3 and offload, or a cluster with GPUs."


@dataclass
class TrainJobConfig:
    """The fields every training job has. A job's own fields follow them."""

    level: Literal["bottom", "middle", "top"] = field("bottom", "which level: bottom (hop 8), middle (32) or top (128)")
    preset: Literal["paper", "tiny"] = field("paper", "the paper's model (for a cluster; refused where it cannot fit) "
                                                      "or a tiny one for a CPU")
    shards: str = field("", "preprocessed shards (the output folder of jobs/preprocess.py)")
    holdout: float = field(0.0, "last fraction of every song kept out of training; evaluation comes from it", lt=1)
    data_seed: int = field(0, "seed of the window stream")
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    mlflow_tracking_uri: str = field("", "default: $MLFLOW_TRACKING_URI, else sqlite in " + RUNS_HELP)
    experiment: str = field("jukebox-train", "MLflow experiment")
    register: str = field("", "registered model name (default: the job's, e.g. jukebox-vqvae-<level>)")
    alias: str = field("current", "alias set on the new version ('' = none)")
    ray_address: str = field("", "Ray cluster to join (default: $RAY_ADDRESS, else an embedded local Ray)")
    num_cpus: int = field(0, "logical CPUs of an embedded Ray (0 = enough for workers and data actors)")

    def validate(self) -> None:
        """The shared fields and sections, without touching the disk (a pipeline checks its config before
        the shards exist); a job's ``validate`` adds its own checks."""
        for section in (self.runtime, self.optim, self.checkpoint):
            section.validate()
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")

    def check_shards(self) -> None:
        """The shards exist: when the job starts."""
        if not self.shards:
            raise ConfigError("--shards is required: the output folder of jobs/preprocess.py")
        folder = Path(self.shards).expanduser()
        if not (folder / "songs").is_dir():
            raise ConfigError(f"no shards at {folder}: expected {folder / 'songs'} (run jobs/preprocess.py first)")

    def shards_path(self) -> Path:
        return Path(self.shards).expanduser().resolve()

    def tracking(self, default_name: str) -> Tracking:
        from pipeline.tracking import tracking_uri

        return Tracking(tracking_uri(self.mlflow_tracking_uri or None), self.experiment, self.register or default_name, self.alias)

    def local_ray(self) -> bool:
        """The ranks run on this machine: an embedded Ray, not a cluster's."""
        import ray

        return not (self.ray_address or os.environ.get("RAY_ADDRESS")) and not ray.is_initialized()

    def start_ray(self) -> None:
        """Join the cluster, or start an embedded Ray with a CPU for every worker and loader (and one spare)."""
        from pipeline.services import init_ray

        rt = self.runtime
        need = rt.workers * (rt.cpus_per_worker + rt.data_cpus) + 1  # + 1: Ray's own tasks and actors
        init_ray(self.ray_address or None, self.num_cpus or max(os.cpu_count() or 1, int(need + 0.999)), progress=False)


def check_fits(cfg: TrainJobConfig, build: Callable, what: str) -> None:
    """Refuse, before Ray starts, a model whose training state cannot fit (``pipeline.train.memory``)."""
    from pipeline.train import memory

    memory.check_fits(build, cfg.runtime, what, local=cfg.local_ray(), instead=SMALLER)


def launch(cfg: TrainJobConfig, task: TrainingTask, tracking: Tracking, job_started: float) -> dict[str, Any]:
    """Train ``task`` on the shared runtime and register it; Ray must be up (``start_ray``)."""
    from pipeline.train.run import train_and_register

    spec = TrainSpec(task, task.source(), cfg.runtime, cfg.optim, cfg.checkpoint, tracking)
    summary = train_and_register(spec, level=cfg.level, job_started=job_started)
    summary["level"] = cfg.level
    return summary


def print_summary(train: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """A job's main: run it, print its summary as JSON."""
    def main(cfg) -> dict[str, Any]:
        summary = train(cfg)
        print(json.dumps(summary, indent=1, default=str))
        return summary

    return main

