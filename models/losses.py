"""The VQ-VAE's losses and quality measures (pure PyTorch).

Loss = L2 / signal variance + linf_weight * L-inf / signal variance
       + spectral_weight * multi-resolution STFT magnitude distance / mean spectral norm
       + commit_weight * commitment.
The two scales are statistics of the training data (``LossScales``), as in the original
implementation: audio stays as decoded (no per-song normalisation, so loudness is learned),
and the loss terms become comparable in size whatever the corpus' loudness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossScales:
    signal_variance: float = 1.0
    spectral_norm: float = 1.0


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, window: int) -> torch.Tensor:
    """(batch, time) -> (batch, freq, frames) magnitudes, computed in fp32."""
    win = torch.hann_window(window, device=x.device, dtype=torch.float32)
    return torch.stft(x.float(), n_fft, hop, window, win, center=True, return_complex=True).abs()


def spectral_distance(x: torch.Tensor, y: torch.Tensor, settings) -> torch.Tensor:
    """Sum over STFT settings of the mean (over the batch) Frobenius norm of |STFT x| - |STFT y|; x, y (batch, time)."""
    total = x.new_zeros((), dtype=torch.float32)
    for n_fft, hop, window in settings:
        diff = stft_magnitude(x, n_fft, hop, window) - stft_magnitude(y, n_fft, hop, window)
        total = total + diff.flatten(1).norm(dim=1).mean()
    return total


def mean_spectral_norm(x: torch.Tensor, settings) -> float:
    """The data statistic the spectral loss is divided by: mean norm of |STFT x| summed over the settings."""
    return float(sum(stft_magnitude(x, *s).flatten(1).norm(dim=1).mean() for s in settings))


def spectral_convergence_db(target: torch.Tensor, recon: torch.Tensor, n_fft: int = 2048, hop: int = 512) -> torch.Tensor:
    """20 log10(|| |S| - |S_hat| ||_F / || |S| ||_F) per example (batch, time) -> (batch,); lower is better."""
    s, s_hat = stft_magnitude(target, n_fft, hop, n_fft), stft_magnitude(recon, n_fft, hop, n_fft)
    ref = s.flatten(1).norm(dim=1).clamp_min(1e-8)
    return 20 * torch.log10((s - s_hat).flatten(1).norm(dim=1).clamp_min(1e-10 * ref) / ref)  # floor: -200 dB


def vqvae_loss(out: dict[str, torch.Tensor], target: torch.Tensor, cfg, scales: LossScales) -> dict[str, torch.Tensor]:
    """``out`` from ``VQVAE.forward``; target (batch, time, channels). Returns the loss and its parts."""
    recon = out["recon"].float()
    target = target.float()
    sq = (recon - target).pow(2).flatten(1)
    l2 = sq.mean() / scales.signal_variance
    linf = sq.topk(min(cfg.linf_k, sq.shape[1]), dim=1).values.mean() / scales.signal_variance
    mono_t, mono_r = target.mean(dim=2), recon.mean(dim=2)
    spec = spectral_distance(mono_t, mono_r, cfg.stft_settings) / scales.spectral_norm
    loss = l2 + cfg.linf_weight * linf + cfg.spectral_weight * spec + cfg.commit_weight * out["commit_loss"]
    return {"loss": loss, "l2": l2.detach(), "linf": linf.detach(), "spectral": spec.detach(),
            "commit": out["commit_loss"].detach()}
