"""Sampling a prior's codes: one token at a time with the key/value cache, in windows longer songs
need, primed by known codes. Pure PyTorch (docs/jukebox-reference.md §4).

Speed at batch 1 is per-token overhead, not arithmetic: the step is one shape-static function
(``Prior.token_logits``, the position a tensor), so ``torch.compile`` makes one graph of it for a
whole window; the choice of the token (temperature, top-k, top-p, guidance, Gumbel-max with noise
drawn outside) is inside that graph, and the cache is written by two in-place copies outside it.

Determinism: a window's random numbers come from a generator the caller seeds (the pipeline
seeds it from (seed, level, window start)), so a window sampled again gives the same codes, and a
resumed run the same song as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch._inductor.config

from models.prior import Prior


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.98  # the paper: 0.98-0.99
    top_k: int = 0  # keep the k most likely tokens (0 = all)
    top_p: float = 0.0  # keep the smallest set with this much probability (0 = all)
    cfg: float = 0.0  # classifier-free guidance: logits = c + cfg * (c - u), u without artist and genre (0 = off)

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0 or not 0.0 <= self.top_p < 1.0 or self.cfg < 0:
            raise ValueError("top_k must be >= 0, top_p in [0, 1), cfg >= 0")


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits outside the top-k / nucleus set to -inf (the most likely token always stays)."""
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        before = torch.softmax(ordered, dim=-1).cumsum(-1) - torch.softmax(ordered, dim=-1)  # mass ahead of each token
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose(logits: torch.Tensor, uniform: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """A token per row drawn from softmax(filtered logits / temperature), by Gumbel-max on ``uniform`` noise."""
    logits = filter_logits(logits.float() / settings.temperature, settings.top_k, settings.top_p)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1.0 - 1e-7)))
    return torch.argmax(logits + gumbel, dim=-1)


def unconditioned(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each row twice: as given, then with artist and genre "unknown" (what conditioning dropout trained)."""
    out = {k: torch.cat([v, v]) for k, v in batch.items()}
    n = batch["artist"].shape[0]
    out["artist"][n:] = 0
    out["genres"][n:] = -1
    out["genres"][n:, 0] = 0
    return out


class TokenSampler:
    """Samples windows of one prior with fixed settings; ``compile`` builds the step graph once per batch size."""

    def __init__(self, prior: Prior, settings: SamplingSettings, compile: bool = False, batched_prefill: bool = True):
        settings.validate()
        self.batched_prefill = batched_prefill
        self.prior, self.settings = prior.eval(), settings
        self.guided = settings.cfg > 0
        self.fn, self.prefill, self.inductor, self.compiled = self._token, prior.prefill, {}, compile
        if compile:
            # a GPU: CUDA graphs. A CPU: the weights folded in as constants and inductor's own GEMM
            # kernels for one-row matmuls (2x faster than without; set while a graph compiles, as
            # torch.compile's ``options`` does not reach freezing). The first window of a shape pays
            # the compile (tens of seconds on a CPU), later ones reuse it.
            on_gpu = next(prior.parameters()).device.type == "cuda"
            self.fn = torch.compile(self._token, dynamic=False, mode="reduce-overhead" if on_gpu else None)
            if not on_gpu:
                self.inductor = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN",
                                 "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}  # quiet

    def _token(self, state: dict[str, torch.Tensor], previous: torch.Tensor, pos: torch.Tensor,
               uniform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, keys, values = self.prior.token_logits(state, previous, pos)
        if self.guided:
            cond, uncond = logits.float().chunk(2)
            logits = cond + self.settings.cfg * (cond - uncond)
        token = choose(logits, uniform, self.settings)
        return (torch.cat([token, token]) if self.guided else token), keys, values

    @torch.no_grad()
    def window(self, cond: dict[str, torch.Tensor], known: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
        """Codes (batch, length) of one window: its first ``known.shape[1]`` tokens are ``known``
        (run through the cache, not sampled), the rest sampled. ``cond``: the prior's conditioning batch."""
        prior = self.prior
        batch, n_known = known.shape
        if self.guided:
            cond, known = unconditioned(cond), torch.cat([known, known])
        state = prior.start_sampling(cond, length)
        out = torch.empty(known.shape[0], length, dtype=torch.long, device=state["start"].device)
        out[:, :n_known] = known
        with torch._inductor.config.patch(self.inductor) if self.inductor else contextlib.nullcontext():
            self._loop(state, known, out, length, batch, generator)
        return out[:batch]

    def _loop(self, state, known, out, length, batch, generator) -> None:
        prior, n_known, device = self.prior, known.shape[1], out.device  # known: (batch, n_known)
        previous = torch.zeros(known.shape[0], dtype=torch.long, device=device)
        positions = torch.arange(length, device=device)
        if n_known and self.batched_prefill:  # the known tokens in one forward
            keys, values = self.prefill(state, known)
            prior.transformer.write_prefix(state, keys, values)
        else:  # one step each through the sampling step (the reference the prefill is tested and timed against)
            noise = torch.full((known.shape[0] // (2 if self.guided else 1), prior.cfg.bins), 0.5, device=device)
            for pos in range(n_known):
                _, keys, values = self.fn(state, previous, positions[pos], noise)
                prior.transformer.write(state, positions[pos], keys, values)
                previous = torch.empty_like(previous).copy_(known[:, pos])
        if n_known:  # a row with the strides of a sampled token (a compiled step guards on strides, even of a batch of one)
            previous = torch.empty_like(previous).copy_(known[:, -1])
        with contextlib.ExitStack() as stack:
            for pos in range(n_known, length):
                if pos == n_known + 1 and self.compiled:
                    # every call of a window has the shapes, strides and dtypes of its first: the graph that
                    # call chose serves the rest without re-checking its guards (~60 us a token on a CPU)
                    stack.enter_context(torch.compiler.set_stance(skip_guard_eval_unsafe=True))
                pos_t = positions[pos]
                uniform = torch.rand(batch, prior.cfg.bins, generator=generator).to(device)
                token, keys, values = self.fn(state, previous, pos_t, uniform)
                prior.transformer.write(state, pos_t, keys, values)
                previous = token
                out[:, pos] = token


def window_starts(total: int, n_ctx: int, hop: int, known: int, align: int = 1) -> Iterator[tuple[int, int]]:
    """(start, end) of the windows that sample tokens ``known .. total``, one at a time (a long song
    has millions): each window after the first keeps ``n_ctx - hop`` tokens already sampled as its
    context (starts a multiple of ``align``)."""
    if not 0 < hop <= n_ctx or hop % align:
        raise ValueError(f"hop {hop} must be in 1..{n_ctx} and a multiple of {align}")
    done = known
    while done < total:
        start = max(0, done - (n_ctx - hop))
        start -= start % align
        if total - start < n_ctx:  # the last window: a full context where the level is long enough (one shape)
            start = max(0, total - n_ctx)
            start -= start % align
        end = min(start + n_ctx, total)
        yield start, end
        done = end
