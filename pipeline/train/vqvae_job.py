"""``jobs/train_vqvae.py``: one VQ-VAE level, from shards to a registered model.

Everything a config can get wrong is checked here, in the driver, before Ray starts a
worker: the level's hop length, the sample length against the hop, the shards, and whether
the model can fit.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from models import levels
from models.vqvae import PAPER, TINY, VQVAE, VQVAEConfig
from pipeline.config import ConfigError, field
from pipeline.train.job import TrainJobConfig, check_fits, launch, print_summary

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
class TrainVQVAEConfig(TrainJobConfig):
    model: ModelOverrides = dataclasses.field(default_factory=ModelOverrides)
    sample_length: int = field(0, "samples per training window (0 = the preset's: paper 393,216, tiny 8,192)")
    experiment: str = field("jukebox-vqvae", "MLflow experiment")

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
        if model.hop_length != levels.hop(self.level):
            raise ConfigError(f"model.downs_t {model.downs_t} gives the {self.level} level a hop of {model.hop_length}; "
                              f"the {self.level} level's hop is {levels.hop(self.level)}")
        if self.window() % model.hop_length:
            raise ConfigError(f"sample_length {self.window()} is not divisible by the {self.level} level's hop {model.hop_length}")
        super().validate()


def check_shards(cfg: TrainVQVAEConfig) -> None:
    """At least one song is longer than a training window (after the hold-out)."""
    from pipeline.data.shards import ShardReader

    cfg.check_shards()
    folder = Path(cfg.shards).expanduser()
    songs = ShardReader(folder).songs
    usable = [s for s in songs.values() if s["num_samples"] * (1 - cfg.holdout) >= cfg.window()]
    if not usable:
        raise ConfigError(f"none of the {len(songs)} songs in {folder} is longer than one window of {cfg.window()} samples"
                          + (f" after holding out {cfg.holdout:.0%}" if cfg.holdout else ""))


def train_vqvae(cfg: TrainVQVAEConfig) -> dict:
    from pipeline.data.audio_windows import WindowSampler
    from pipeline.train.vqvae_task import VQVAETask, estimate_loss_scales

    job_started = time.time()
    cfg.validate()
    check_shards(cfg)
    model = cfg.model_config()
    check_fits(cfg, lambda: VQVAE(model), f"the {cfg.preset} {cfg.level} VQ-VAE")
    shards = str(cfg.shards_path())
    sampler = WindowSampler(shards, cfg.window(), cfg.data_seed, span=(0.0, 1.0 - cfg.holdout))
    # before Ray starts, not in threads beside it: concurrent first imports of torch/Ray/MLflow modules can deadlock
    scales = estimate_loss_scales(sampler, model)
    cfg.start_ray()
    task = VQVAETask(model, shards, cfg.window(), scales, cfg.data_seed, cfg.holdout, lineage=sampler.lineage())
    summary = launch(cfg, task, cfg.tracking(f"jukebox-vqvae-{cfg.level}"), job_started)
    summary.update(hop_length=model.hop_length, loss_scales=dataclasses.asdict(scales))
    return summary


main_summary = print_summary(train_vqvae)
