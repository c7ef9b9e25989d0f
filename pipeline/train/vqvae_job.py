"""``jobs/train_vqvae.py``: one VQ-VAE level, from shards to a registered model.

Everything a config can get wrong is checked here, in the driver, before Ray starts a
worker: the level's hop length, the sample length against the hop, the shards.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.vqvae import PAPER, TINY, VQVAEConfig
from pipeline.config import ConfigError, field
from pipeline.services import RUNS_HELP
from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig
from pipeline.train.runtime import Tracking

LEVEL_HOPS = {"bottom": 8, "middle": 32, "top": 128}  # the paper's compression per level
PRESETS = {"paper": PAPER, "tiny": TINY}
DEFAULT_SAMPLE_LENGTH = {"paper": 393_216, "tiny": 8_192}  # paper: ~8.9 s windows


@dataclass
class ModelOverrides:
    """Changes to the preset's model (unset = the preset's value)."""

    width: int | None = field(None, "channels of the residual stacks", ge=1)
    depth: int | None = field(None, "residual blocks per downsampling", ge=1)
    emb_width: int | None = field(None, "code vector width", ge=1)
    codebook_size: int | None = field(None, "codes per level", ge=2)
    downs_t: tuple[int, ...] | None = field(None, "stride-2 downsamplings per level, e.g. 3,2,2 (the hop must stay the level's)")
    commit_weight: float | None = field(None, "commitment loss weight (paper 0.02)")
    spectral_weight: float | None = field(None, "weight of the multi-resolution STFT loss")
    restart_threshold: float | None = field(None, "EMA uses per batch below which a code is restarted (paper 1.0)")
    restart_after_unused: int | None = field(None, "also restart a code unused this many batches in a row (0: off, the paper's rule only)")
    checkpoint_activations: bool | None = field(None, "recompute residual blocks in backward (less memory, ~1/3 more compute)")


@dataclass
class TrainVQVAEConfig:
    level: Literal["bottom", "middle", "top"] = field("bottom", "which VQ-VAE: bottom (hop 8), middle (32), top (128)")
    preset: Literal["paper", "tiny"] = field("paper", "the paper's model or a tiny one for CPU tests")
    model: ModelOverrides = dataclasses.field(default_factory=ModelOverrides)
    shards: str = field("", "preprocessed shards (the output folder of jobs/preprocess.py)")
    sample_length: int = field(0, "samples per training window (0 = the preset's: paper 393,216, tiny 8,192)")
    holdout: float = field(0.0, "last fraction of every song kept out of training; evaluation crops come from it", lt=1)
    data_seed: int = field(0, "seed of the window stream")
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    mlflow_tracking_uri: str = field("", "default: $MLFLOW_TRACKING_URI, else sqlite in " + RUNS_HELP)
    experiment: str = field("jukebox-vqvae", "MLflow experiment")
    register: str = field("", "registered model name (default: jukebox-vqvae-<level>)")
    alias: str = field("current", "alias set on the new version ('' = none)")
    ray_address: str = field("", "Ray cluster to join (default: $RAY_ADDRESS, else an embedded local Ray)")
    num_cpus: int = field(0, "logical CPUs of an embedded Ray (0 = enough for workers and data actors)")

    def model_config(self) -> VQVAEConfig:
        overrides = {k: v for k, v in dataclasses.asdict(self.model).items() if v is not None}
        return dataclasses.replace(PRESETS[self.preset][self.level], **overrides)

    def window(self) -> int:
        return self.sample_length or DEFAULT_SAMPLE_LENGTH[self.preset]

    def validate(self) -> None:
        model = self.model_config()
        try:
            model.validate()
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        if model.hop_length != LEVEL_HOPS[self.level]:
            raise ConfigError(f"model.downs_t {model.downs_t} gives the {self.level} level a hop of {model.hop_length}; "
                              f"the {self.level} level's hop is {LEVEL_HOPS[self.level]}")
        if self.window() % model.hop_length:
            raise ConfigError(f"sample_length {self.window()} is not divisible by the {self.level} level's hop {model.hop_length}")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")


def check_shards(cfg: TrainVQVAEConfig) -> None:
    from pipeline.data.shards import ShardReader

    if not cfg.shards:
        raise ConfigError("--shards is required: the output folder of jobs/preprocess.py")
    folder = Path(cfg.shards).expanduser()
    if not (folder / "songs").is_dir():
        raise ConfigError(f"no shards at {folder}: expected {folder / 'songs'} (run jobs/preprocess.py first)")
    songs = ShardReader(folder).songs
    usable = [s for s in songs.values() if s["num_samples"] * (1 - cfg.holdout) >= cfg.window()]
    if not usable:
        raise ConfigError(f"none of the {len(songs)} songs in {folder} is longer than one window of {cfg.window()} samples"
                          + (f" after holding out {cfg.holdout:.0%}" if cfg.holdout else ""))


def train_vqvae(cfg: TrainVQVAEConfig) -> dict:
    import time

    from pipeline.data.audio_windows import WindowSampler
    from pipeline.services import init_ray, tracking_uri
    from pipeline.train.run import train_and_register
    from pipeline.train.runtime import TrainSpec
    from pipeline.train.vqvae_task import VQVAETask, estimate_loss_scales

    job_started = time.time()
    cfg.validate()
    for section in (cfg.runtime, cfg.optim, cfg.checkpoint):
        section.validate()
    check_shards(cfg)
    model = cfg.model_config()
    shards = str(Path(cfg.shards).expanduser().resolve())
    sampler = WindowSampler(shards, cfg.window(), cfg.data_seed, span=(0.0, 1.0 - cfg.holdout))
    tracking = Tracking(tracking_uri(cfg.mlflow_tracking_uri or None), cfg.experiment,
                        cfg.register or f"jukebox-vqvae-{cfg.level}", cfg.alias)
    rt = cfg.runtime
    need = rt.workers * (rt.cpus_per_worker + rt.data_cpus) + 1  # + 1: a spare CPU for Ray's own tasks and actors
    # (not overlapped in threads with Ray's start: concurrent first imports of torch/Ray/MLflow modules can deadlock)
    scales = estimate_loss_scales(sampler, model)
    init_ray(cfg.ray_address or None, cfg.num_cpus or max(os.cpu_count() or 1, int(need + 0.999)), progress=False)
    task = VQVAETask(model, shards, cfg.window(), scales, cfg.data_seed, cfg.holdout, lineage=sampler.lineage())
    spec = TrainSpec(task, task.source(), rt, cfg.optim, cfg.checkpoint, tracking, job_started=job_started)
    summary = train_and_register(spec, level=cfg.level)
    summary.update(level=cfg.level, hop_length=model.hop_length, loss_scales=dataclasses.asdict(scales))
    return summary


def main_summary(cfg: TrainVQVAEConfig) -> dict:
    summary = train_vqvae(cfg)
    print(json.dumps(summary, indent=1, default=str))
    return summary

