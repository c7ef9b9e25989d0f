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
        return self.codebook.quantise(self.encoder(channels_first(audio)))[0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(batch, frames) codes -> (batch, frames * hop, channels) audio."""
        return self._decode(self.codebook.embed(codes)).transpose(1, 2)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder, its last upsampling and output layers as one map (``upsample_and_project``)."""
        *blocks, out = self.decoder
        for block in blocks[:-1]:
            z = block(z)
        *layers, up = blocks[-1]
        for layer in layers:
            z = layer(z)
        return upsample_and_project(z, up, out)

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction plus what the loss needs; audio is (batch, time, channels)."""
        z = self.encoder(channels_first(audio))
        codes, z_q, commit, stats = self.codebook(z)
        recon = self._decode(z_q).transpose(1, 2)
        return {"recon": recon, "codes": codes, "commit_loss": commit, **stats}


def channels_first(audio: torch.Tensor) -> torch.Tensor:
    """(batch, time, channels) -> (batch, channels, time) with the strides of a contiguous tensor.
    oneDNN reads a convolution's layout from the strides: mono audio transposed has strides
    (time, 1, 1), which it takes for channels-last, and its output, and every layer after it, stays
    channels-last, each convolution copying to and from it (52 ms of the bottom level's 633 ms
    training step, measured)."""
    b, t, c = audio.shape
    return audio.reshape(b, c, t) if c == 1 else audio.transpose(1, 2).contiguous()


def upsample_and_project(x: torch.Tensor, up: nn.ConvTranspose1d, out: nn.Conv1d) -> torch.Tensor:
    """``out(up(x))``: the decoder's last upsampling (a transposed convolution, kernel 4, stride 2,
    to ``emb_width`` channels) and its output layer (a convolution, kernel 3, to the audio's
    channels), with nothing between them. Two linear maps are one: a transposed convolution of
    kernel 6 from the upsampler's input straight to the audio, whose weights are products of the
    two layers' (so their gradients are the same). That skips the (batch, emb_width, samples)
    tensor between the layers, which is the largest of the model (33 MB for 2 x 65,536 samples at
    width 64) and took a fifth of the bottom level's training step to compute, differentiate and
    copy. The parameters stay those of the two layers (checkpoints are unchanged)."""
    if (up.kernel_size, up.stride, up.padding, up.output_padding, up.dilation, up.groups) != ((4,), (2,), (1,), (0,), (1,), 1) \
            or (out.kernel_size, out.stride, out.padding, out.dilation, out.groups) != ((3,), (1,), (1,), (1,), 1):
        return out(up(x))
    batch, _, frames = x.shape
    w_up, w_out = up.weight, out.weight  # (in, mid, 4), (channels, mid, 3)
    # v[i, o, j, k]: input channel i through tap k of the upsampler, then tap j of the output layer;
    # it lands at output sample 2 t + k - j from input frame t
    v = torch.einsum("ojm,imk->iojk", w_out.transpose(1, 2), w_up)
    taps = torch.stack([sum(v[:, :, j, j + shift] for j in range(3) if 0 <= j + shift < 4) for shift in range(-2, 4)], dim=-1)
    channels = taps.shape[1]
    z = (taps.flatten(1).t() @ x).view(batch, channels, 6, frames)  # (batch, channels, 6 taps, frames)
    z = nn.functional.pad(z, (1, 1))
    # output 2 t takes taps 0, 2, 4 of frames t + 1, t, t - 1; output 2 t + 1 takes taps 1, 3, 5
    even = z[:, :, 0, 2:] + z[:, :, 2, 1:-1] + z[:, :, 4, :-2]
    odd = z[:, :, 1, 2:] + z[:, :, 3, 1:-1] + z[:, :, 5, :-2]
    y = torch.stack([even, odd], dim=-1).flatten(2)
    # the output layer pads the upsampled signal with zeros: what the upsampler would put one sample
    # before the start (frame 0, tap 0) and after the end (the last frame, tap 3), and its bias there,
    # are not part of the output's first and last samples
    bias_up = up.bias if up.bias is not None else w_up.new_zeros(w_up.shape[1])
    edge_bias = torch.einsum("omj,m->oj", w_out, bias_up)  # (channels, 3)
    first = torch.einsum("bi,io->bo", x[:, :, 0], v[:, :, 0, 0]) + edge_bias[:, 0]
    last = torch.einsum("bi,io->bo", x[:, :, -1], v[:, :, 2, 3]) + edge_bias[:, 2]
    first, last = (e.to(y.dtype)[..., None] for e in (first, last))  # under autocast: the matmul's precision, as the layers give
    y = torch.cat([y[..., :1] - first, y[..., 1:-1], y[..., -1:] - last], dim=-1)
    bias = edge_bias.sum(1) + (out.bias if out.bias is not None else 0)
    return y + bias.to(y.dtype)[None, :, None]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of encoder and decoder, and codebook entries (EMA buffers, not trained)."""
    return {"encoder": sum(p.numel() for p in model.encoder.parameters() if p.requires_grad),
            "decoder": sum(p.numel() for p in model.decoder.parameters() if p.requires_grad),
            "codebook_entries": model.codebook.codes.numel()}
