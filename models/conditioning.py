"""What a prior is conditioned on (docs/jukebox-reference.md §3): artist and genre, timing,
lyrics (top prior) and the upper level's codes (upsamplers). Pure PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.transformer import Transformer, TransformerConfig
from models.vqvae import ResidualStack


class LabelConditioner(nn.Module):
    """Artist embedding plus the sum of the genre words' embeddings: the sequence's start token.

    Id 0 is "unknown" in both vocabularies; genre lists are padded with -1. During training an
    example's artist and genres are replaced by unknown with probability ``dropout`` (so a
    sampler can use classifier-free guidance: the same model, with and without them)."""

    def __init__(self, n_artists: int, n_genres: int, width: int, dropout: float = 0.0):
        super().__init__()
        self.artist, self.genre, self.dropout = nn.Embedding(n_artists, width), nn.Embedding(n_genres, width), dropout

    def forward(self, artist: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        """artist (batch,), genres (batch, max_genres) -> (batch, 1, width)."""
        if self.training and self.dropout > 0:
            drop = torch.rand(artist.shape, device=artist.device) < self.dropout
            artist = torch.where(drop, torch.zeros_like(artist), artist)
            unknown = torch.full_like(genres, -1)
            unknown[:, 0] = 0
            genres = torch.where(drop[:, None], unknown, genres)
        valid = genres >= 0
        genre = (self.genre(genres.clamp(min=0)) * valid[..., None]).sum(1)
        return (self.artist(artist) + genre)[:, None]


class TimingConditioner(nn.Module):
    """Per-position embeddings of the song's total length, the absolute time of each token, and
    the fraction of the song elapsed at it, each binned into ``bins`` (added to the positions)."""

    def __init__(self, bins: int, width: int, min_samples: float, max_samples: float, hop_length: int):
        super().__init__()
        self.bins, self.min, self.max, self.hop = bins, float(min_samples), float(max_samples), hop_length
        self.total, self.absolute, self.fraction = (nn.Embedding(bins, width) for _ in range(3))

    def _bin(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.bins).floor().long().clamp(0, self.bins - 1)

    def forward(self, total: torch.Tensor, offset: torch.Tensor, length: int) -> torch.Tensor:
        """total, offset (batch,) in samples -> (batch, length, width)."""
        total, offset = total.float(), offset.float()
        at = offset[:, None] + torch.arange(length, device=offset.device) * self.hop
        span = max(self.max - self.min, 1.0)
        return (self.total(self._bin((total - self.min) / span))[:, None] + self.absolute(self._bin(at / self.max))
                + self.fraction(self._bin(at / total[:, None].clamp(min=1.0))))


@dataclass
class UpsamplerConfig:
    upper_bins: int = 2048  # the upper level's codebook
    width: int = 1024
    depth: int = 16  # residual blocks per x2 stage
    dilation_growth: int = 3
    dilation_cycle: int = 8
    stages: int = 2  # x2 transposed convolutions: hop ratio 4 between adjacent levels


class UpsamplerConditioner(nn.Module):
    """The upper level's codes for the same audio -> an embedding per lower-level position:
    token embedding, a WaveNet-style stack of dilated residual convolutions, transposed
    convolutions up to the lower rate, LayerNorm (added to the token embeddings)."""

    def __init__(self, cfg: UpsamplerConfig, width: int):
        super().__init__()
        self.embed = nn.Embedding(cfg.upper_bins, width)
        layers: list[nn.Module] = [nn.Conv1d(width, cfg.width, 3, padding=1)]
        for i in range(cfg.stages):
            layers += [ResidualStack(cfg.width, cfg.depth, cfg.dilation_growth, reverse=True, cycle=cfg.dilation_cycle),
                       nn.ConvTranspose1d(cfg.width, width if i == cfg.stages - 1 else cfg.width, 4, stride=2, padding=1)]
        self.convs = nn.Sequential(*layers)
        self.ln = nn.LayerNorm(width)

    def forward(self, upper: torch.Tensor) -> torch.Tensor:
        """upper codes (batch, t) -> (batch, t * 2**stages, width)."""
        return self.ln(self.convs(self.embed(upper).transpose(1, 2)).transpose(1, 2))


@dataclass
class LyricsConfig:
    n_vocab: int = 80  # characters, 0 = padding (pipeline.data.lyrics_tokens)
    encoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(
        width=1280, depth=18, heads=4, n_ctx=512, block_len=16))
    loss_weight: float = 0.4  # the auxiliary loss on predicting the next lyric character


class LyricsEncoder(nn.Module):
    """A causal transformer over the window's characters; its states, projected to the music
    decoder's width, are what the encoder-decoder layers attend to. It also predicts the next
    character (the auxiliary lyrics loss)."""

    def __init__(self, cfg: LyricsConfig, width: int):
        super().__init__()
        enc = cfg.encoder
        self.embed, self.pos = nn.Embedding(cfg.n_vocab, enc.width), nn.Embedding(enc.n_ctx, enc.width)
        self.start = nn.Parameter(torch.zeros(enc.width))
        self.transformer = Transformer(enc)
        self.proj, self.ln = nn.Linear(enc.width, width), nn.LayerNorm(width)
        self.out = nn.Linear(width, cfg.n_vocab, bias=False)
        nn.init.normal_(self.start, std=0.02)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (batch, n_chars) -> memory (batch, n_chars, width), next-character logits."""
        x = self.embed(tokens[:, :-1])
        x = torch.cat([self.start.expand(tokens.shape[0], 1, -1).to(x.dtype), x], dim=1) + self.pos.weight[:tokens.shape[1]]
        memory = self.ln(self.proj(self.transformer(x)))
        return memory, self.out(memory)
