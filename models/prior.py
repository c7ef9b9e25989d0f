"""A Jukebox prior: an autoregressive transformer over one level's VQ-VAE codes, conditioned on
artist/genre (the start token), timing (added per position), lyrics (the top prior, through
encoder-decoder layers) or the upper level's codes (the upsamplers). Pure PyTorch.

The top prior models p(z_top | labels, lyrics); an upsampler models p(z_level | z_upper, labels).
Paper configurations beside tiny CPU ones are in ``models.prior_configs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.conditioning import LabelConditioner, LyricsConfig, LyricsEncoder, TimingConditioner, UpsamplerConditioner, UpsamplerConfig
from models.transformer import Transformer, TransformerConfig


@dataclass
class PriorConfig:
    level: int = 2  # 2 top prior, 1 middle upsampler, 0 bottom upsampler
    bins: int = 2048  # the level's codebook size
    hop_length: int = 128  # audio samples per token of this level
    sample_rate: int = 44100
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    n_artists: int = 4111
    n_genres: int = 120
    timing: bool = True  # the top prior: total length, absolute and fractional time of each token
    timing_bins: int = 128
    min_duration_s: float = 60.0  # the range the total-length bins cover
    max_duration_s: float = 600.0
    lyrics: LyricsConfig | None = None
    upsampler: UpsamplerConfig | None = None
    tie_output: bool = False  # output layer shares the token embedding's weights (the upsamplers)
    cond_dropout: float = 0.0  # probability of training an example with unknown artist and genre
    emb_dropout: float = 0.0  # dropout on the input (token + position + conditioning) embeddings: the original's emb_dropout

    @property
    def n_ctx(self) -> int:
        return self.transformer.n_ctx

    def validate(self) -> None:
        self.transformer.validate()
        if not 0.0 <= self.emb_dropout < 1.0:
            raise ValueError(f"emb_dropout {self.emb_dropout} is outside [0, 1)")
        if self.lyrics is not None and not self.transformer.cross_layers:
            raise ValueError("a prior with lyrics needs encoder-decoder layers (transformer.cross_layers)")
        if self.transformer.cross_layers and self.lyrics is None:
            raise ValueError("encoder-decoder layers without a lyrics encoder")
        if self.upsampler is not None and self.n_ctx % (2 ** self.upsampler.stages):
            raise ValueError(f"context {self.n_ctx} is not a multiple of the upsampling ratio {2 ** self.upsampler.stages}")


class Prior(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        width = cfg.transformer.width
        self.embed = nn.Embedding(cfg.bins, width)
        self.pos = nn.Parameter(torch.randn(cfg.n_ctx, width) * 0.01)
        self.labels = LabelConditioner(cfg.n_artists, cfg.n_genres, width, cfg.cond_dropout)
        sr = cfg.sample_rate
        self.timing = (TimingConditioner(cfg.timing_bins, width, cfg.min_duration_s * sr, cfg.max_duration_s * sr,
                                         cfg.hop_length) if cfg.timing else None)
        self.lyrics = LyricsEncoder(cfg.lyrics, width) if cfg.lyrics is not None else None
        self.upsampler = UpsamplerConditioner(cfg.upsampler, width) if cfg.upsampler is not None else None
        self.transformer = Transformer(cfg.transformer)
        self.out = nn.Linear(width, cfg.bins, bias=False)
        self.emb_drop = nn.Dropout(cfg.emb_dropout) if cfg.emb_dropout else nn.Identity()
        nn.init.normal_(self.embed.weight, std=0.02)
        if cfg.tie_output:
            self.out.weight = self.embed.weight

    def no_weight_decay(self) -> set[str]:
        return {"pos", "lyrics.start"}

    def conditioning(self, batch: dict[str, torch.Tensor], length: int) -> tuple[torch.Tensor, ...]:
        """(start token, per-position embeddings, lyrics memory or None, lyrics logits or None) for a batch."""
        start = self.labels(batch["artist"], batch["genres"])
        positions = self.pos[:length].unsqueeze(0)
        if self.timing is not None:
            positions = positions + self.timing(batch["total_length"], batch["offset"], length)
        if self.upsampler is not None:
            positions = positions + self.upsampler(batch["upper_codes"])[:, :length]
        memory = lyrics_logits = None
        if self.lyrics is not None:
            memory, lyrics_logits = self.lyrics(batch["lyrics"])
        return start, positions, memory, lyrics_logits

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: codes (b, t) and the conditioning -> logits (b, t, bins) for every position."""
        codes = batch["codes"]
        start, positions, memory, lyrics_logits = self.conditioning(batch, codes.shape[1])
        x = torch.cat([start.to(positions.dtype), self.embed(codes[:, :-1])], dim=1) + positions
        out = {"logits": self.out(self.transformer(self.emb_drop(x), memory))}
        if lyrics_logits is not None:
            out["lyrics_logits"] = lyrics_logits
        return out

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss_from(self(batch), batch)

    def loss_from(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Next-token cross-entropy (+ the weighted lyrics loss) of a forward's output; metrics in bits per token."""
        music = F.cross_entropy(out["logits"].flatten(0, 1).float(), batch["codes"].flatten())
        metrics = {"bits_per_token": music / math.log(2)}
        loss = music
        if "lyrics_logits" in out:
            tokens = batch["lyrics"]
            lyrics = F.cross_entropy(out["lyrics_logits"].flatten(0, 1).float(), tokens.flatten(), ignore_index=0)
            lyrics = torch.nan_to_num(lyrics)  # a batch of instrumentals: no characters to predict
            metrics["lyrics_bits_per_char"] = lyrics / math.log(2)
            loss = loss + self.cfg.lyrics.loss_weight * lyrics
        return loss, metrics

    @torch.no_grad()
    def lyrics_attention(self, batch: dict[str, torch.Tensor], layer: int = -1, head: int = 0) -> torch.Tensor:
        """(batch, music tokens, characters): the attention weights of one encoder-decoder head."""
        block = [b for b in self.transformer.blocks if b.attn.kind == "cross"][layer]
        seen: dict[str, torch.Tensor] = {}
        hook = block.ln_attn.register_forward_hook(lambda module, args, out: seen.setdefault("x", out))
        try:
            self(batch)
        finally:
            hook.remove()
        memory, _ = self.lyrics(batch["lyrics"])
        q = block.attn._heads(block.attn.q(seen["x"]))[:, head]
        k = block.attn.memory_kv(memory)[0][:, head]
        return torch.softmax(q.float() @ k.float().transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)

    # ------------------------------------------------------------ sampling

    @torch.no_grad()
    def start_sampling(self, batch: dict[str, torch.Tensor], length: int | None = None) -> dict[str, torch.Tensor]:
        """The state ``token_logits`` reads: the conditioning computed once, empty key/value caches."""
        length = length or self.cfg.n_ctx
        start, positions, memory, _ = self.conditioning(batch, length)
        cache = self.transformer.new_cache(start.shape[0], memory, dtype=positions.dtype, device=positions.device)
        return {"start": start.to(positions.dtype), "positions": positions, **cache}

    def prefill(self, state: dict[str, torch.Tensor], known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the known tokens ``known`` (batch, n) at positions 0..n-1, in one
        forward (``Transformer.write_prefix`` stores them); the token at ``n`` is then sampled from
        ``token_logits`` given ``known[:, -1]``. What a primed window, or a window continuing the
        previous one's context, runs instead of ``n`` one-token steps."""
        start = state["start"]
        x = torch.cat([start, self.embed(known[:, :-1]).to(start.dtype)], dim=1) + state["positions"][:, :known.shape[1]]
        return self.transformer.prefill(x, state)

    def token_logits(self, state: dict[str, torch.Tensor], previous: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(logits (batch, bins) of the token at ``pos``, its keys, its values), given the token at
        ``pos - 1`` (ignored at 0). Pure and shape-static in ``pos`` (a 0-d tensor): one compiled
        graph serves a whole window; ``Transformer.write`` stores the keys and values."""
        x = torch.where(pos == 0, state["start"], self.embed(previous)[:, None].to(state["start"].dtype))
        x = x + state["positions"].index_select(1, pos.view(1))
        h, keys, values = self.transformer.step(x, pos, state)
        return self.out(h)[:, 0], keys, values

    @torch.no_grad()
    def step(self, state: dict[str, torch.Tensor], previous: torch.Tensor | None, pos: int) -> torch.Tensor:
        """Logits (batch, bins) of the token at ``pos`` given the token at ``pos - 1`` (None at 0); the cache is updated."""
        if previous is None:
            previous = torch.zeros(state["start"].shape[0], dtype=torch.long, device=state["start"].device)
        pos_t = torch.tensor(pos, device=state["start"].device)
        logits, keys, values = self.token_logits(state, previous, pos_t)
        self.transformer.write(state, pos_t, keys, values)
        return logits


def count_parameters(model: Prior) -> dict[str, int]:
    """Trainable parameters by part (a tied output layer counts once, with the embedding)."""
    part = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    counts = {"transformer": part(model.transformer), "lyrics_encoder": part(model.lyrics),
              "upsampler_conditioner": part(model.upsampler), "labels": part(model.labels) + part(model.timing)}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
