"""Jukebox's Scalable Transformer: a pre-LayerNorm causal decoder whose layers cycle through
factorized attention patterns over the context seen as blocks (docs/jukebox-reference.md §3).

With the context as ``n_blocks x block_len`` (the paper: 128 x 64 for 8192 tokens):

- ``row``: causal attention inside a token's own block;
- ``col``: causal attention to the same offset in every earlier block (strided);
- ``prev``: the whole previous block, plus the token's own block up to itself. The
  original pads block 0's "previous block" with zeros (its tokens attend to nothing
  there); here they attend causally within their block, so no row of the pattern is empty;
- ``dense``: plain causal attention (small models, the lyrics-free tests);
- ``cross``: encoder-decoder attention to a memory (the lyrics encoder's states), in place of
  self-attention in that layer, as the original's 5B lyrics model does.

Every pattern runs through ``scaled_dot_product_attention`` on a reshaped view (blocks
become batch entries), so no mask larger than ``block_len x 2 block_len`` is ever made. The
key/value cache path (``step``) attends from one new token to exactly the keys its pattern
allows and gives the logits of the full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

PATTERN = ("row", "col", "prev")


@dataclass
class TransformerConfig:
    width: int = 256
    depth: int = 8
    heads: int = 2
    n_ctx: int = 2048
    block_len: int = 64  # the context seen as n_ctx // block_len blocks (the paper: 8192 = 128 x 64)
    attn_mult: float = 0.25  # q/k/v width as a fraction of the model width
    mlp_mult: float = 1.0
    factorized: bool = True  # False: dense causal attention in every layer
    cross_layers: tuple[int, ...] = ()  # layers that attend to the encoder memory instead of themselves
    checkpoint_activations: bool = False
    resid_dropout: float = 0.0  # dropout on each attention and MLP output before it joins the residual stream
    # (the original's resid_dropout; 0 in the paper's runs, which had a corpus: a few songs overfit without it)

    @property
    def attn_width(self) -> int:
        return int(self.width * self.attn_mult)

    def kind(self, layer: int) -> str:
        if layer in self.cross_layers:
            return "cross"
        return PATTERN[layer % 3] if self.factorized else "dense"

    def validate(self) -> None:
        if self.attn_width % self.heads:
            raise ValueError(f"attention width {self.attn_width} is not divisible by {self.heads} heads")
        if self.factorized and self.n_ctx % self.block_len:
            raise ValueError(f"context {self.n_ctx} is not a whole number of blocks of {self.block_len}")
        if not 0.0 <= self.resid_dropout < 1.0:
            raise ValueError(f"resid_dropout {self.resid_dropout} is outside [0, 1)")
        if any(not 0 <= i < self.depth for i in self.cross_layers):
            raise ValueError(f"cross layers {self.cross_layers} outside 0..{self.depth - 1}")


def _prev_block_mask(n_blocks: int, block_len: int, device) -> torch.Tensor:
    """(n_blocks, block_len, 2 block_len): all of the previous block (none for block 0), own block causally."""
    own = torch.ones(block_len, block_len, dtype=torch.bool, device=device).tril()
    prev = torch.ones(n_blocks, block_len, block_len, dtype=torch.bool, device=device)
    prev[0] = False
    return torch.cat([prev, own.expand(n_blocks, -1, -1)], dim=-1)


def factorized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str, block_len: int) -> torch.Tensor:
    """q, k, v: (batch, heads, time, head_dim), time a whole number of blocks.

    Batch and heads are merged so every call is 4-D: torch.compile's attention decomposition
    mis-broadcasts the causal mask of 5-D inputs (torch 2.13).
    """
    b, h, t, d = q.shape
    if kind == "dense":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    nb = t // block_len
    qb, kb, vb = (x.reshape(b * h, nb, block_len, d) for x in (q, k, v))
    if kind == "row":
        out = _causal_attention(qb, kb, vb)
    elif kind == "col":
        qc, kc, vc = (x.transpose(1, 2) for x in (qb, kb, vb))  # (b h, block_len, nb, d): causal over blocks
        out = _causal_attention(qc, kc, vc).transpose(1, 2)
    elif kind == "prev":
        shift = lambda x: torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # noqa: E731
        keys, values = torch.cat([shift(kb), kb], dim=2), torch.cat([shift(vb), vb], dim=2)
        out = F.scaled_dot_product_attention(qb, keys, values, attn_mask=_prev_block_mask(nb, block_len, q.device))
    else:
        raise ValueError(f"unknown attention pattern {kind!r}")
    return out.reshape(b, h, t, d)


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention over the last-but-one dimension of short sequences (a block, or a column of
    blocks). On a CPU in bf16 or fp16 it is written out as two batched matmuls: PyTorch's fused CPU
    kernel is 2.5x slower there for 64-token blocks (forward and backward, 10 ms against 4 per
    layer of the reference prior, measured), while in fp32 it is the faster of the two."""
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    n = q.shape[-2]
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


def pattern_mask(kind: str, t: int, block_len: int) -> torch.Tensor:
    """The dense (t, t) boolean mask a pattern is equivalent to (for tests and plots, never for training)."""
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    causal = j <= i
    same_block, bi, bj = i // block_len == j // block_len, i // block_len, j // block_len
    return {"dense": causal, "row": causal & same_block, "col": causal & (i % block_len == j % block_len),
            "prev": (causal & same_block) | (bj == bi - 1)}[kind]


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, kind: str):
        super().__init__()
        self.kind, self.heads, self.block_len = kind, cfg.heads, cfg.block_len
        s = cfg.attn_width
        if kind == "cross":  # queries from the music, keys and values from the memory (projected to this width)
            self.q, self.kv = nn.Linear(cfg.width, s), nn.Linear(cfg.width, 2 * s)
        else:
            self.qkv = nn.Linear(cfg.width, 3 * s)
        self.proj = nn.Linear(s, cfg.width)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, s = x.shape
        return x.view(b, t, self.heads, s // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, t, d = x.shape
        return self.proj(x.transpose(1, 2).reshape(b, t, h * d))

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(self._heads(x) for x in self.kv(memory).chunk(2, dim=-1))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "cross":
            k, v = self.memory_kv(memory)
            return self._merge(F.scaled_dot_product_attention(self._heads(self.q(x)), k, v))
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        return self._merge(factorized_attention(q, k, v, self.kind, self.block_len))

    def prefill(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
        """The forward of a run of tokens that also returns their keys and values (a cross layer: the
        memory's, already projected, and no keys of its own): (output, keys, values)."""
        if self.kind == "cross":
            return self._merge(F.scaled_dot_product_attention(self._heads(self.q(x)), *memory_kv)), None, None
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        return self._merge(factorized_attention(q, k, v, self.kind, self.block_len)), k, v

    def step(self, x: torch.Tensor, pos: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One token at position ``pos`` (a 0-d tensor): x (batch, 1, width); ``keys``/``values`` this
        layer's cache (batch, heads, n_ctx, head_dim) for positions before ``pos`` (a cross layer: the
        memory's). Returns (output, this token's key, value); the caller writes them into the cache.

        Static shapes throughout: the keys a pattern allows are gathered by index into a buffer of
        fixed length and masked, so one compiled graph serves every position."""
        if self.kind == "cross":
            return self._merge(_attend(self._heads(self.q(x)), keys, values, None)), None, None
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        index, allowed = _step_keys(self.kind, pos, self.block_len, keys.shape[2])
        keys, values = torch.cat([keys.index_select(2, index), k], 2), torch.cat([values.index_select(2, index), v], 2)
        allowed = torch.cat([allowed, allowed.new_ones(1)])  # the token itself
        return self._merge(_attend(q, keys, values, allowed)), k, v


def _step_keys(kind: str, pos: torch.Tensor, block_len: int, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cache index, allowed) of the earlier keys a pattern lets the token at ``pos`` see, in a
    fixed-size window: row (its block), prev (the previous block and its own), col (its column)."""
    arange = torch.arange
    if kind == "row":
        index = pos - pos % block_len + arange(block_len, device=pos.device)
    elif kind == "prev":
        index = pos - pos % block_len - block_len + arange(2 * block_len, device=pos.device)
    elif kind == "col":
        index = pos % block_len + block_len * arange(n_ctx // block_len, device=pos.device)
    else:  # dense
        index = arange(n_ctx, device=pos.device)
    allowed = (index >= 0) & (index < pos)
    return index.clamp(0, n_ctx - 1), allowed


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Attention of one query row, written out: for a single query, torch's fused kernels cost more
    in set-up than the arithmetic, and a compiler fuses these few ops into one loop."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, kind: str):
        super().__init__()
        hidden = int(cfg.width * cfg.mlp_mult)
        self.ln_attn, self.attn = nn.LayerNorm(cfg.width), Attention(cfg, kind)
        self.ln_mlp = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, cfg.width))
        self.drop = nn.Dropout(cfg.resid_dropout) if cfg.resid_dropout else nn.Identity()

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_attn(x), memory))
        return x + self.drop(self.mlp(self.ln_mlp(x)))

    def prefill(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
        out, k, v = self.attn.prefill(self.ln_attn(x), memory_kv)
        x = x + out
        return x + self.mlp(self.ln_mlp(x)), k, v

    def step(self, x: torch.Tensor, pos: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, k, v = self.attn.step(self.ln_attn(x), pos, keys, values)
        x = x + out
        return x + self.mlp(self.ln_mlp(x)), k, v


class Transformer(nn.Module):
    """The layer stack (embeddings and output heads belong to the model that uses it)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg, cfg.kind(i)) for i in range(cfg.depth))
        self.ln_out = nn.LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            if self.cfg.checkpoint_activations and self.training:
                x = checkpoint(block, x, memory, use_reentrant=False)
            else:
                x = block(x, memory)
        return self.ln_out(x)

    def new_cache(self, batch: int, memory: torch.Tensor | None = None, dtype=None, device=None) -> dict[str, torch.Tensor]:
        """Key/value buffers for sampling: ``k``/``v`` (layers, batch, heads, n_ctx, head_dim), and the
        cross layers' keys and values of ``memory``, computed once (``memory_k``/``memory_v``)."""
        cfg = self.cfg
        shape = (cfg.depth, batch, cfg.heads, cfg.n_ctx, cfg.attn_width // cfg.heads)
        cache = {"k": torch.zeros(shape, dtype=dtype, device=device), "v": torch.zeros(shape, dtype=dtype, device=device)}
        cross = [block.attn.memory_kv(memory) for block in self.blocks if block.attn.kind == "cross"]
        if cross:
            cache["memory_k"], cache["memory_v"] = (torch.stack([kv[i] for kv in cross]) for i in (0, 1))
        return cache

    def step(self, x: torch.Tensor, pos: torch.Tensor, cache: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One token through every layer: (output (batch, 1, width), its keys and values (layers, batch,
        heads, 1, head_dim)). Pure (the cache is only read), so it compiles to one graph; ``write`` stores."""
        ks, vs, cross = [], [], 0
        for i, block in enumerate(self.blocks):
            if block.attn.kind == "cross":
                x, k, v = block.step(x, pos, cache["memory_k"][cross], cache["memory_v"][cross])
                cross += 1
                k = v = torch.zeros_like(cache["k"][0, :, :, :1])  # a placeholder: the stack keeps one row per layer
            else:
                x, k, v = block.step(x, pos, cache["k"][i], cache["v"][i])
            ks.append(k)
            vs.append(v)
        return self.ln_out(x), torch.stack(ks), torch.stack(vs)

    def prefill(self, x: torch.Tensor, cache: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (layers, batch, heads, t, head_dim) of a run of known tokens' inputs ``x``
        (batch, t, width) at positions 0..t-1, in one forward: what ``step`` writes one token at a
        time, at the cost of a training forward (gpt-fast's prefill). The run is padded to whole
        blocks; every pattern is causal, so the padding changes nothing before it."""
        t = x.shape[1]
        if self.cfg.factorized:
            x = F.pad(x, (0, 0, 0, -t % self.cfg.block_len))
        ks, vs, cross = [], [], 0
        for block in self.blocks:
            if block.attn.kind == "cross":
                x, _, _ = block.prefill(x, (cache["memory_k"][cross], cache["memory_v"][cross]))
                cross += 1
                k = v = cache["k"].new_zeros(cache["k"].shape[1:3] + (t, cache["k"].shape[-1]))  # the stack keeps a row per layer
            else:
                x, k, v = block.prefill(x, None)
            ks.append(k[:, :, :t])
            vs.append(v[:, :, :t])
        return torch.stack(ks), torch.stack(vs)

    @staticmethod
    def write_prefix(cache: dict[str, torch.Tensor], keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store a prefill's keys and values at positions 0..t-1."""
        t = keys.shape[3]
        cache["k"][:, :, :, :t] = keys
        cache["v"][:, :, :, :t] = values

    @staticmethod
    def write(cache: dict[str, torch.Tensor], pos: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        cache["k"].index_copy_(3, pos.view(1), keys)
        cache["v"].index_copy_(3, pos.view(1), values)
