"""The VQ-VAE as a training job: windows from the shards (its data source), the paper's losses and its card (its task)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.levels import LEVELS
from models.losses import LossScales, mean_spectral_norm, spectral_convergence_db, vqvae_loss
from models.vqvae import VQVAE, VQVAEConfig
from pipeline.audio import TARGET_SAMPLE_RATE
from pipeline.data.audio_windows import WindowSampler
from pipeline.train.protocol import TrainingTask
from pipeline.train.sources import VQVAEWindows

SCALES_STREAM = 2 ** 32 - 1  # a window stream no training step draws from
MEDIA_STREAM = 2 ** 32 - 2


@dataclass
class VQVAETask(TrainingTask):
    model: VQVAEConfig
    shards: str
    sample_length: int
    scales: LossScales
    data_seed: int = 0
    holdout: float = 0.0  # the last fraction of every song: never trained on; media/eval crops come from it
    media_windows: int = 2
    lineage: dict[str, Any] = field(default_factory=dict)
    name = "vqvae"

    def source(self) -> VQVAEWindows:
        return VQVAEWindows(self.shards, self.sample_length, self.data_seed, self.holdout)

    def setup(self, device: torch.device) -> None:
        eval_span = (1.0 - self.holdout, 1.0) if self.holdout else (0.0, 1.0)
        self.eval_sampler = WindowSampler(self.shards, self.sample_length, self.data_seed, span=eval_span)

    def build_model(self) -> torch.nn.Module:
        return VQVAE(self.model)

    def run_step(self, model, batch, log):
        audio = batch["audio"]
        out = model(audio)
        parts = vqvae_loss(out, audio, self.model, self.scales)
        metrics = {k: v.detach() for k, v in parts.items() if k != "loss"}
        if log:  # a log-step extra: the STFTs of the spectral convergence
            recon = out["recon"].detach().float()
            metrics["spectral_convergence_db"] = spectral_convergence_db(audio.float().mean(2), recon.mean(2)).mean()
        metrics.update({k: torch.as_tensor(out[k]) for k in ("perplexity", "codes_in_batch", "codes_restarted") if k in out})
        return parts["loss"], metrics

    def media(self, model, folder: Path | None) -> dict[str, float]:
        """Reconstructions of fixed windows (held out when ``holdout`` > 0): SC, codes in use, audio, spectrograms."""
        specs = self.eval_sampler.epoch(0, self.media_windows, stream=MEDIA_STREAM)
        audio = torch.from_numpy(self.eval_sampler.load_batch(specs))
        out = model(audio.to(next(model.parameters()).dtype))  # the engine's dtype (bf16/fp16 on GPU); plain modules too
        recon = out["recon"].float()
        sc = spectral_convergence_db(audio.mean(2), recon.mean(2))
        if folder is not None:
            write_media(folder, audio.numpy(), recon.numpy(), [f"{s.song_id}@{s.offset}" for s in specs])
        loss = vqvae_loss({**out, "recon": recon}, audio, self.model, self.scales)["loss"]
        return {"loss": float(loss), "spectral_convergence_db": float(sc.mean()), "codes_in_use": float(out["codes"].unique().numel())}

    def card(self) -> dict[str, Any]:
        return {"family": "vqvae", "level": LEVELS[self.model.level], "sample_rate": TARGET_SAMPLE_RATE,
                "hop_length": self.model.hop_length, "codebook_size": self.model.codebook_size,
                "emb_width": self.model.emb_width, "sample_length": self.sample_length,
                "config": dataclasses.asdict(self.model), "loss_scales": dataclasses.asdict(self.scales),
                "holdout": self.holdout, "lineage": self.lineage}

    def params(self) -> dict[str, Any]:
        flat = {f"model.{k}": v for k, v in dataclasses.asdict(self.model).items()}
        flat.update(sample_length=self.sample_length, data_seed=self.data_seed, holdout=self.holdout,
                    signal_variance=self.scales.signal_variance, spectral_norm=self.scales.spectral_norm)
        return flat


def write_media(folder: Path, audio: np.ndarray, recon: np.ndarray, names: list[str]) -> None:
    """WAVs of each original and reconstruction, one PNG of their spectrograms, and an index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.6 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for j, (label, x) in enumerate((("original", audio[i]), ("reconstruction", recon[i]))):
            sf.write(folder / f"{i}_{label}.wav", np.clip(x, -1, 1), TARGET_SAMPLE_RATE, subtype="PCM_16")
            spec = np.abs(torch.stft(torch.from_numpy(x.mean(1).copy()), 2048, 512, window=torch.hann_window(2048),
                                     return_complex=True).numpy())
            axes[i][j].imshow(20 * np.log10(spec + 1e-5), origin="lower", aspect="auto", vmin=-80, vmax=40, cmap="magma")
            axes[i][j].set_title(f"{name} {label}", fontsize=8)
            axes[i][j].set_axis_off()
    fig.tight_layout()
    fig.savefig(folder / "spectrograms.png", dpi=80)
    plt.close(fig)
    (folder / "windows.json").write_text(json.dumps(names))


def estimate_loss_scales(sampler: WindowSampler, cfg: VQVAEConfig, windows: int = 64) -> LossScales:
    """Signal variance and mean spectral norm of the training data (the original's loss divisors)."""
    x = torch.from_numpy(sampler.load_batch(sampler.epoch(0, windows, stream=SCALES_STREAM))).squeeze(-1)
    return LossScales(float(x.var()), mean_spectral_norm(x, cfg.stft_settings))
