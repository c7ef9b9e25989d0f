"""One level of Jukebox's VQ-VAE: strided-conv encoder with dilated residual stacks, an EMA
codebook, a mirrored decoder (Dhariwal et al. 2020, section 2 of docs/jukebox-reference.md).

Pure PyTorch. The three levels are three independent models; level ``l``'s encoder is the
chain of the encoder blocks of levels 0..l (so the top level downsamples by 2**(3+2+2) =
128), exactly as the original implementation builds them, which is what makes its
published parameter counts come out (checked by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.codebook import EMACodebook


@dataclass
class VQVAEConfig:
    level: int = 0  # 0 bottom (hop 8), 1 middle (hop 32), 2 top (hop 128)
    downs_t: tuple[int, ...] = (3, 2, 2)  # stride-2 downsamplings contributed by each level's block
    width: int = 64
    depth: int = 8  # residual blocks per downsampling
    dilation_growth: int = 3
    emb_width: int = 64
    codebook_size: int = 2048
    codebook_decay: float = 0.99
    restart_threshold: float = 1.0  # EMA uses per batch below which a code is restarted
    restart_after_unused: int = 5  # also restart a code unused this many batches in a row (0: the paper's EMA rule only)
    commit_weight: float = 0.02
    linf_weight: float = 0.02
    linf_k: int = 2048  # the L-infinity term averages the k largest squared errors per example
    spectral_weight: float = 1.0
    stft_settings: tuple[tuple[int, int, int], ...] = ((2048, 240, 1200), (1024, 120, 600), (512, 50, 240))
    checkpoint_activations: bool = False
    channels: int = 1  # mono training examples (random stereo downmix happens in the data path)

    @property
    def hop_length(self) -> int:
        return 2 ** sum(self.downs_t[:self.level + 1])

    def validate(self) -> None:
        if not 0 <= self.level < len(self.downs_t):
            raise ValueError(f"level {self.level} outside 0..{len(self.downs_t) - 1}")


# The paper's three levels (multipliers 2, 1, 1 on width 32 / depth 4), and tiny ones for CPU tests.
PAPER = {
    "bottom": VQVAEConfig(level=0, width=64, depth=8),
    "middle": VQVAEConfig(level=1, width=32, depth=4),
    "top": VQVAEConfig(level=2, width=32, depth=4),
}
TINY = {
    "bottom": VQVAEConfig(level=0, width=16, depth=2, codebook_size=256, emb_width=16),
    "middle": VQVAEConfig(level=1, width=16, depth=2, codebook_size=256, emb_width=16),
    "top": VQVAEConfig(level=2, width=16, depth=2, codebook_size=256, emb_width=16),
}


class ResidualStack(nn.Module):
    """Non-causal dilated residual blocks: x + Conv1(ReLU(Conv3_d(ReLU(x)))), d = growth**(i % cycle)."""

    def __init__(self, width: int, depth: int, growth: int, reverse: bool = False, checkpoint: bool = False,
                 cycle: int | None = None):
        super().__init__()
        dilations = [growth ** (i % (cycle or depth)) for i in range(depth)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv1d(width, width, 3, padding=d, dilation=d), nn.ReLU(), nn.Conv1d(width, width, 1))
            for d in (dilations[::-1] if reverse else dilations))
        self.checkpoint = checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.checkpoint and self.training:
                x = x + torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = x + block(x)
        return x


def _encoder_block(c_in: int, c_out: int, downs: int, cfg: VQVAEConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(downs):
        layers += [nn.Conv1d(c_in if i == 0 else cfg.width, cfg.width, 4, stride=2, padding=1),
                   ResidualStack(cfg.width, cfg.depth, cfg.dilation_growth, checkpoint=cfg.checkpoint_activations)]
    layers.append(nn.Conv1d(cfg.width, c_out, 3, padding=1))
    return nn.Sequential(*layers)


def _decoder_block(c_in: int, c_out: int, downs: int, cfg: VQVAEConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv1d(c_in, cfg.width, 3, padding=1)]
    for i in range(downs):
        layers += [ResidualStack(cfg.width, cfg.depth, cfg.dilation_growth, reverse=True, checkpoint=cfg.checkpoint_activations),
                   nn.ConvTranspose1d(cfg.width, c_out if i == downs - 1 else cfg.width, 4, stride=2, padding=1)]
    return nn.Sequential(*layers)


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        downs = cfg.downs_t[:cfg.level + 1]
        self.encoder = nn.Sequential(*[_encoder_block(cfg.channels if i == 0 else cfg.emb_width, cfg.emb_width, d, cfg)
                                       for i, d in enumerate(downs)])
        self.decoder = nn.Sequential(*[_decoder_block(cfg.emb_width, cfg.emb_width, d, cfg) for d in reversed(downs)],
                                     nn.Conv1d(cfg.emb_width, cfg.channels, 3, padding=1))
        self.codebook = EMACodebook(cfg.codebook_size, cfg.emb_width, cfg.codebook_decay, cfg.restart_threshold,
                                    cfg.restart_after_unused)

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, time, channels) audio -> (batch, time // hop) codes."""
        return self.codebook.quantise(self.encoder(audio.transpose(1, 2)))[0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(batch, frames) codes -> (batch, frames * hop, channels) audio."""
        return self.decoder(self.codebook.embed(codes)).transpose(1, 2)

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction plus what the loss needs; audio is (batch, time, channels)."""
        x = audio.transpose(1, 2)
        z = self.encoder(x)
        codes, z_q, commit, stats = self.codebook(z)
        recon = self.decoder(z_q).transpose(1, 2)
        return {"recon": recon, "codes": codes, "commit_loss": commit, **stats}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of encoder and decoder, and codebook entries (EMA buffers, not trained)."""
    return {"encoder": sum(p.numel() for p in model.encoder.parameters() if p.requires_grad),
            "decoder": sum(p.numel() for p in model.decoder.parameters() if p.requires_grad),
            "codebook_entries": model.codebook.codes.numel()}
