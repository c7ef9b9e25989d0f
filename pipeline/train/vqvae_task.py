"""The VQ-VAE as a training task: windows from the shards, the paper's losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.losses import LossScales, mean_spectral_norm, vqvae_loss
from models.vqvae import VQVAE, VQVAEConfig
from pipeline.train.runtime import TrainingTask
from pipeline.train.windows import WindowSampler

SCALES_STREAM = 2 ** 32 - 1  # a window stream no training step draws from


@dataclass
class VQVAETask(TrainingTask):
    model: VQVAEConfig
    shards: str
    sample_length: int
    scales: LossScales
    data_seed: int = 0
    name = "vqvae"

    def setup_worker(self) -> None:
        self.sampler = WindowSampler(self.shards, self.sample_length, self.data_seed)

    def build_model(self) -> torch.nn.Module:
        return VQVAE(self.model)

    def batch(self, step: int, micro: int, rank: int, world: int, size: int) -> torch.Tensor:
        specs = self.sampler.epoch(step, size * world, stream=micro)[rank * size:(rank + 1) * size]
        return torch.from_numpy(self.sampler.load_batch(specs))

    def run_step(self, model, batch):
        out = model(batch)
        parts = vqvae_loss(out, batch, self.model, self.scales)
        metrics = {k: float(v.detach()) for k, v in parts.items()}
        metrics.update({k: float(out[k]) for k in ("perplexity", "codes_in_batch", "codes_restarted") if k in out})
        return parts["loss"], metrics


def estimate_loss_scales(sampler: WindowSampler, cfg: VQVAEConfig, windows: int = 64) -> LossScales:
    """Signal variance and mean spectral norm of the training data (the original's loss divisors)."""
    x = torch.from_numpy(sampler.load_batch(sampler.epoch(0, windows, stream=SCALES_STREAM))).squeeze(-1)
    return LossScales(float(x.var()), mean_spectral_norm(x, cfg.stft_settings))
