"""The one training runtime: Ray Train workers each running a DeepSpeed engine.

A model family plugs in as a ``TrainingTask`` (audiocraft's solver shape): it builds the
model, produces the batch for (step, rank, world) and computes the loss of a batch. This
file owns everything else, once: DeepSpeed (ZeRO 0-3, offload, precision, accumulation,
clipping, LR warm-up then linear decay to 0), checkpoints through ``ray.train.report``,
restarts (``FailureConfig``) and resuming, MLflow logging from rank 0.

Determinism: the batch of a step and the random state used inside it are functions of
(seed, step, rank) alone, so a run resumed from a checkpoint continues exactly where the
uninterrupted run would be; no RNG state or data-loader position needs saving.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from pipeline.config import field

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "deepspeed"


@dataclass
class RuntimeConfig:
    workers: int = field(1, "Ray Train workers (processes); each runs one DeepSpeed rank")
    cpus_per_worker: float = field(1.0, "CPUs Ray reserves per worker")
    threads_per_worker: int = field(1, "torch threads inside each worker")
    use_gpu: bool = field(False, "one GPU per worker")
    zero_stage: int = field(2, "DeepSpeed ZeRO stage 0-3 (infra/deepspeed/zero<N>.json)")
    offload: bool = field(False, "ZeRO-Offload of optimizer state to CPU (stage >= 1)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field("auto", "auto: bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU")
    batch_size: int = field(2, "examples per worker per micro-step")
    grad_accum: int = field(1, "micro-steps per optimizer step")
    grad_clip: float = field(1.0, "gradient norm clip (0 = off)")
    lr: float = field(3e-4, "peak learning rate (Adam)")
    warmup_steps: int = field(100, "linear warm-up, then linear decay to 0 at total_steps")
    total_steps: int = field(1000, "optimizer steps")
    checkpoint_every: int = field(200, "steps between checkpoints (and at the end)")
    log_every: int = field(10, "steps between metric reports")
    seed: int = field(0, "everything random is a function of (seed, step, rank)")
    max_failures: int = field(1, "worker-group restarts from the last checkpoint")
    storage: str = field("runs/train", "where Ray Train keeps checkpoints (made absolute)")
    run_name: str = field("", "Ray Train run name; reusing one resumes it (default: <task>-<time>)")
    fail_at_step: int = field(0, "fault injection for tests: rank 0 raises once at this step (0 = never)")

    def validate(self) -> None:
        from pipeline.config import ConfigError

        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"runtime.zero_stage must be 0-3, got {self.zero_stage}")
        if self.offload and self.zero_stage == 0:
            raise ConfigError("runtime.offload needs ZeRO stage >= 1")
        for name in ("workers", "batch_size", "grad_accum", "total_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"runtime.{name} must be >= 1")


class TrainingTask(ABC):
    """What a model family writes; picklable (it travels to the workers)."""

    name = "task"

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    @abstractmethod
    def batch(self, step: int, micro: int, rank: int, world: int, size: int) -> Any:
        """The batch of (step, micro-step) for this rank: a pure function of its arguments."""

    @abstractmethod
    def run_step(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (to backpropagate) and scalar metrics of one micro-batch."""

    def setup_worker(self) -> None:
        """Per-worker preparation (open data readers...)."""

    def media(self, model: torch.nn.Module, step: int, folder: Path) -> None:
        """Rank 0, every ``media_every`` steps: write files (audio, images) to log under ``media/``."""


def deepspeed_config(cfg: RuntimeConfig, world: int, device: str) -> dict:
    ds = json.loads((DEEPSPEED_CONFIGS / f"zero{cfg.zero_stage}.json").read_text())
    ds.update(train_micro_batch_size_per_gpu=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
              train_batch_size=cfg.batch_size * cfg.grad_accum * world, gradient_clipping=cfg.grad_clip,
              steps_per_print=10 ** 9, zero_allow_untested_optimizer=True)
    precision = cfg.precision
    if precision == "auto":
        precision = "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    ds["bf16"] = {"enabled": precision == "bf16"}
    ds["fp16"] = {"enabled": precision == "fp16"}
    if cfg.offload:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    ds["scheduler"] = {"type": "WarmupDecayLR", "params": {
        "warmup_min_lr": 0.0, "warmup_max_lr": cfg.lr, "warmup_num_steps": max(1, min(cfg.warmup_steps, cfg.total_steps - 1)),
        "total_num_steps": cfg.total_steps, "warmup_type": "linear"}}
    return ds


def _seed(cfg: RuntimeConfig, step: int, rank: int) -> None:
    torch.manual_seed(hash((cfg.seed, step, rank)) % 2 ** 63)


def train_loop(config: dict) -> None:
    """Runs in every Ray Train worker."""
    import deepspeed
    import ray.train

    task: TrainingTask = config["task"]
    cfg: RuntimeConfig = config["runtime"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads_per_worker)
    device = "cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"
    task.setup_worker()
    _seed(cfg, -1, 0)  # same initial weights on every rank
    model = task.build_model()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg, world, device))
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            _, client = engine.load_checkpoint(folder, tag="state")
        start = int(client["step"])
    history: list[dict] = []
    for step in range(start, cfg.total_steps):
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            _seed(cfg, step * cfg.grad_accum + micro, rank)
            loss, parts = task.run_step(engine, task.batch(step, micro, rank, world, cfg.batch_size))
            engine.backward(loss)
            engine.step()
            for k, v in parts.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / cfg.grad_accum
        if cfg.fail_at_step and step + 1 == cfg.fail_at_step and start == 0 and rank == 0:
            raise RuntimeError(f"injected failure at step {step + 1} (runtime.fail_at_step)")
        metrics.update(step=step + 1, lr=engine.get_lr()[0], step_s=time.perf_counter() - t0)
        history.append(metrics)
        last = step + 1 == cfg.total_steps
        if (step + 1) % cfg.checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory() as tmp:
                engine.save_checkpoint(tmp, tag="state", client_state={"step": step + 1})
                ray.train.report({**metrics, "history": history}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            history = []
        elif (step + 1) % cfg.log_every == 0:
            ray.train.report({**metrics, "history": history})
            history = []


def fit(task: TrainingTask, cfg: RuntimeConfig):
    """Train ``task`` with Ray Train; returns the ``ray.train.Result`` (its checkpoint holds the ZeRO state)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg.validate()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cfg.use_gpu else "cpu")
    trainer = TorchTrainer(
        train_loop, train_loop_config={"task": task, "runtime": cfg},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=cfg.run_name or f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                             storage_path=str(Path(cfg.storage).resolve()),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    return trainer.fit()


def consolidated_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """fp32 weights from a ZeRO checkpoint (any stage), on the CPU, without a process group."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag="state")
