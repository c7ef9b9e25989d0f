"""The driver's side of a training run: name it, and fit it with Ray Train.

A run ``name`` that exists under the checkpoint storage resumes from its newest checkpoint:
Ray restores it to the workers, which read their step from it.
"""

from __future__ import annotations

import os
import time

from pipeline.train.config import CheckpointConfig
from pipeline.train.protocol import RunContext, RunOutcome, TrainingTask, TrainSpec
from pipeline.train.worker import train_loop


def run_name(task: TrainingTask, ckpt: CheckpointConfig, level: str = "") -> str:
    """The given name, or one that two jobs started in the same second do not share."""
    if ckpt.run_name:
        return ckpt.run_name
    parts = [task.name, level, time.strftime("%Y%m%d-%H%M%S"), f"{os.getpid()}"]
    return "-".join(p for p in parts if p)


def fit(spec: TrainSpec, ctx: RunContext):
    """Train with Ray Train; returns the ``ray.train.Result`` (its checkpoint holds the ZeRO state) and
    what the workers recorded in the ``RunOutcome``."""
    import ray
    from ray.train import CheckpointConfig as RayCheckpointConfig
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.services import use_venv_torch_extensions

    cfg, ckpt = spec.runtime, spec.checkpoint
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cfg.use_gpu else "cpu")
    # workers print as print does: Ray Train's patch sends every print to its logger as well, so a
    # progress line showed twice and a library's print escaped redirect_stdout (propagated to the workers)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    use_venv_torch_extensions()
    ctx.outcome = ray.remote(num_cpus=0)(RunOutcome).remote()
    milestones = cfg.total_steps // ckpt.milestone_every if ckpt.milestone_every else 0
    trainer = TorchTrainer(
        train_loop, train_loop_config={"spec": spec, "context": ctx},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=ctx.name, storage_path=ckpt.storage_uri(),
                             logging_config=LoggingConfig(log_level="WARNING"),  # not every report's metrics on the console
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=RayCheckpointConfig(num_to_keep=ckpt.keep_last + milestones,
                                                                   checkpoint_score_attribute="checkpoint_score",
                                                                   checkpoint_score_order="max")))
    try:
        result = trainer.fit()
        facts = ray.get(ctx.outcome.get.remote())
    finally:
        ray.kill(ctx.outcome)
        ctx.outcome = None
    return result, facts
