"""The training runtime's config sections, shared by every model family's job.

Three sections, as torchtitan's job config has them, so ``--help`` groups what belongs
together: ``runtime`` (processes, precision, ZeRO, batch, steps, logging), ``optim``
(AdamW, its schedule, clipping) and ``checkpoint`` (where, how often, what is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pipeline.config import ConfigError, check_name, field
from pipeline.services import RUNS_HELP


def _finite(section: str, name: str, value: float, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    """Refuse NaN, infinities and values outside [low, high] (open ends where asked), naming the field."""
    bad = not math.isfinite(value)
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise ConfigError(f"{section}.{name} must be a finite number {' and '.join(p for p in (lo, hi) if p)}, got {value}")


@dataclass
class RuntimeConfig:
    workers: int = field(1, "Ray Train workers (processes); each runs one DeepSpeed rank", ge=1)
    cpus_per_worker: float = field(1.0, "CPUs Ray reserves per worker", ge=None, gt=0)
    threads_per_worker: int = field(1, "torch threads inside each worker", ge=1)
    use_gpu: bool = field(False, "one GPU per worker")
    zero_stage: int = field(2, "DeepSpeed ZeRO stage 0-3 (infra/deepspeed/zero<N>.json); 3 builds the model partitioned", le=3)
    offload: bool = field(False, "ZeRO-Offload: optimizer state and step on the CPU (DeepSpeed's CPU Adam; stage >= 1)")
    compile: bool = field(False, "torch.compile the forward and a prior's loss (ZeRO 0-2): fused kernels after a one-off compile")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field("auto", "auto: bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU")
    autocast: Literal["off", "bf16"] = field("off", "bf16: the forward under torch.autocast with fp32 weights and optimizer "
                                                    "(convolutions and matmuls in bf16); needs precision fp32 and bf16 hardware "
                                                    "(a CPU with AVX512-BF16 or AMX: checked, refused otherwise)")
    batch_size: int = field(2, "examples per worker per micro-step", ge=1)
    grad_accum: int = field(1, "micro-steps per optimizer step", ge=1)
    total_steps: int = field(1000, "optimizer steps", ge=1)
    ema_decay: float = field(0.0, "EMA of the weights (0 = off; e.g. 0.999), each rank its own partition; the EMA weights are registered",
                             lt=1)
    log_every: int = field(10, "steps between metric logs: metrics are averaged over ranks and steps, and leave the device only then", ge=1)
    media_every: int = field(0, "steps between audio/image logs (0 = at the end only)")
    data_cpus: float = field(0.5, "CPUs of each rank's data-loading actor (Ray Data)", ge=None, gt=0)
    prefetch_batches: int = field(4, "micro-batches each rank's loader works ahead", ge=1)
    seed: int = field(0, "everything random is a function of (seed, step, rank)")
    max_failures: int = field(1, "worker-group restarts from the last checkpoint")
    inject_fault: str = field("", "tests only: 'raise:N' (rank 0 raises once at step N) or 'nan:N' (rank 0's loss is NaN at step N)")

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"runtime.zero_stage must be 0-3, got {self.zero_stage}")
        if self.offload and self.zero_stage == 0:
            raise ConfigError("runtime.offload needs ZeRO stage >= 1")
        if self.autocast != "off" and self.precision in ("bf16", "fp16"):
            raise ConfigError("runtime.autocast works on fp32 weights: use it with precision fp32 (or auto on CPU)")
        if self.compile and self.zero_stage == 3:  # its gather/release hooks on every submodule break the compiled graph
            raise ConfigError("runtime.compile works with ZeRO stages 0-2, not 3")
        _finite("runtime", "ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        _finite("runtime", "cpus_per_worker", self.cpus_per_worker, 0.0, low_open=True)
        _finite("runtime", "data_cpus", self.data_cpus, 0.0, low_open=True)
        for name in ("workers", "threads_per_worker", "batch_size", "grad_accum", "total_steps", "log_every", "prefetch_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"runtime.{name} must be >= 1, got {getattr(self, name)}")
        if self.media_every < 0 or self.max_failures < 0:
            raise ConfigError("runtime.media_every and runtime.max_failures must be >= 0")
        self.fault()  # parses

    def fault(self) -> tuple[str, int] | None:
        if not self.inject_fault:
            return None
        kind, _, step = self.inject_fault.partition(":")
        if kind not in ("raise", "nan") or not step.isdigit() or int(step) < 1:
            raise ConfigError(f"runtime.inject_fault must be 'raise:N' or 'nan:N' with N >= 1, got {self.inject_fault!r}")
        return kind, int(step)


@dataclass
class OptimConfig:
    lr: float = field(3e-4, "peak learning rate", ge=None, gt=0)
    betas: tuple[float, ...] = field((0.9, 0.999), "AdamW betas (the paper's priors: 0.9,0.95)")
    eps: float = field(1e-8, "AdamW epsilon", ge=None, gt=0)
    weight_decay: float = field(0.0, "decoupled weight decay, on the parameters the model declares decayed (weight matrices)")
    grad_clip: float = field(1.0, "gradient norm clip (0 = off)")
    warmup_steps: int = field(100, "linear warm-up from 0 to lr")
    decay: Literal["linear", "cosine", "constant"] = field("linear", "after warm-up: to 0 at total_steps (linear, cosine) or none")

    def validate(self) -> None:
        _finite("optim", "lr", self.lr, 0.0, low_open=True)
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers, got {self.betas}")
        for b in self.betas:
            _finite("optim", "betas", b, 0.0, 1.0, high_open=True)
        _finite("optim", "eps", self.eps, 0.0, low_open=True)
        _finite("optim", "weight_decay", self.weight_decay, 0.0)
        _finite("optim", "grad_clip", self.grad_clip, 0.0)
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")

    def lr_factor(self, step: int, total_steps: int) -> float:
        """The schedule's multiplier of ``lr`` for optimizer step ``step`` (0-based)."""
        warmup = min(self.warmup_steps, max(total_steps - 1, 0))
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class CheckpointConfig:
    every: int = field(200, "steps between checkpoints (and one at the end)", ge=1)
    keep_last: int = field(2, "checkpoints kept, newest first (milestones aside)", ge=1)
    milestone_every: int = field(0, "also keep every checkpoint at a multiple of this many steps (0 = none)")
    storage: str = field("", "where Ray Train keeps runs: a path (made absolute) or a URI Ray supports (file://, s3://, gs://); "
                             "default: train/ in " + RUNS_HELP + ", whose working dir is deleted with the job")
    run_name: str = field("", "Ray Train run name ([A-Za-z0-9._-]); reusing one resumes it (default: <task>-<level>-<time>-<pid>)")

    def validate(self) -> None:
        if self.every < 1 or self.keep_last < 1 or self.milestone_every < 0:
            raise ConfigError("checkpoint.every and checkpoint.keep_last must be >= 1, checkpoint.milestone_every >= 0")
        if self.milestone_every and self.milestone_every % self.every:
            raise ConfigError(f"checkpoint.milestone_every ({self.milestone_every}) must be a multiple of checkpoint.every ({self.every})")
        if self.run_name:
            check_name(self.run_name, "checkpoint.run_name")

    def storage_uri(self) -> str:
        """A URI as given, or an absolute local path (Ray Train workers run in another directory)."""
        from pathlib import Path

        from pipeline.services import runs_dir

        if "://" in self.storage:
            return self.storage
        return str(Path(self.storage).expanduser().resolve() if self.storage else runs_dir() / "train")
