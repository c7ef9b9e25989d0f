"""EMA vector-quantisation codebook with random restarts (Jukebox / VQ-VAE-2 style).

No codebook loss: the codes follow exponential moving averages of the encoder outputs
assigned to them (decay 0.99). A code whose EMA usage falls below ``restart_threshold``
(about one use per batch) is replaced by a random encoder output of the current batch,
so the codebook does not collapse. With ``restart_after_unused`` > 0 a code unused for that
many batches in a row is restarted too, whatever its EMA count (see ``_update``). Under
torch.distributed the batch statistics are summed over ranks first, so every rank keeps the
same codebook.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

DISTANCE_BLOCK = 512  # rows of the distance matrix computed at a time


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class EMACodebook(nn.Module):
    def __init__(self, size: int, width: int, decay: float = 0.99, restart_threshold: float = 1.0, restart_after_unused: int = 0):
        super().__init__()
        self.size, self.width, self.decay, self.restart_threshold = size, width, decay, restart_threshold
        self.restart_after_unused = restart_after_unused
        self.register_buffer("codes", torch.zeros(size, width))
        self.register_buffer("ema_sum", torch.zeros(size, width))
        self.register_buffer("ema_count", torch.ones(size))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps_unused", torch.zeros(size))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # codebooks saved before steps_unused existed load as "every code used just now"
        state_dict.setdefault(prefix + "steps_unused", torch.zeros(self.size))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _random_rows(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """n rows of x (tiled with a little noise when x has fewer rows), identical on every rank."""
        if x.shape[0] < n:
            reps = (n + x.shape[0] - 1) // x.shape[0]
            x = x.repeat(reps, 1) + 0.01 / self.width ** 0.5 * torch.randn(x.shape[0] * reps, x.shape[1], device=x.device)
        rows = x[torch.randperm(x.shape[0], device=x.device)[:n]].contiguous()
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(rows, 0)
        return rows

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, width, frames) -> codes (batch, frames), flat vectors (batch*frames, width)."""
        flat = z.transpose(1, 2).reshape(-1, self.width).float()
        codes = self.codes.float()  # distances in fp32 even when the engine runs the module in bf16/fp16
        # |x|^2 is the same for every code of a row, so the argmin needs only |c|^2 - 2 x.c (one fused addmm);
        # not under autocast, which would make it bf16: 8 bits of mantissa pick wrong codes (and bf16 argmin is 4x slower).
        # In blocks of rows: the whole (tokens x codes) matrix is 134 MB per bottom-level batch and goes through
        # memory twice; 512-row blocks (4 MB) stay in cache: 40 ms instead of 93 (2 threads, measured).
        norms = codes.pow(2).sum(1)[None, :]
        best = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        with torch.autocast(z.device.type, enabled=False):
            for i in range(0, flat.shape[0], DISTANCE_BLOCK):
                # .min(1).indices, not .argmin(1): the same first-minimum index, from a kernel twice as fast on a CPU
                best[i:i + DISTANCE_BLOCK] = torch.addmm(norms, flat[i:i + DISTANCE_BLOCK], codes.t(), alpha=-2).min(1).indices
        return best.view(z.shape[0], z.shape[2]), flat

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codes[codes].transpose(1, 2)  # (batch, width, frames)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        codes = codes.view(-1)  # per-code sums by index, not a dense (tokens x codes) one-hot matmul: 16k x 2048 per batch
        batch_sum = _all_reduce(flat.new_zeros(self.size, self.width).index_add_(0, codes, flat))
        batch_count = _all_reduce(torch.bincount(codes, minlength=self.size).to(flat.dtype))
        self.ema_sum.mul_(self.decay).add_(batch_sum, alpha=1 - self.decay)
        self.ema_count.mul_(self.decay).add_(batch_count, alpha=1 - self.decay)
        self.steps_unused.add_(1).mul_((batch_count == 0).to(self.steps_unused.dtype))
        live = self.ema_count >= self.restart_threshold
        if self.restart_after_unused > 0:
            # A code that was popular early keeps an EMA count far above the threshold for hundreds of
            # steps after the encoder has moved away from it (count c takes ln(c) / (1 - decay) steps to
            # decay); counting consecutive unused batches recycles such zombies at once.
            live &= self.steps_unused < self.restart_after_unused
        live = live.float()[:, None]
        replacement = self._random_rows(flat, self.size)
        self.codes.copy_(live * self.ema_sum / self.ema_count.clamp_min(1e-6)[:, None] + (1 - live) * replacement)
        # a restarted code starts from its new vector with one use, so it is not restarted again at once
        self.ema_sum.copy_(live * self.ema_sum + (1 - live) * replacement)
        self.ema_count.copy_(live[:, 0] * self.ema_count + (1 - live[:, 0]))
        self.steps_unused.mul_(live[:, 0])
        p = batch_count / batch_count.sum().clamp_min(1)
        return {"codes_restarted": (1 - live).sum(), "codes_in_batch": (batch_count > 0).sum().float(),
                "perplexity": torch.exp(-(p * torch.log(p + 1e-10)).sum())}

    @torch.compiler.disable  # a branch on a buffer's value: outside a compiled graph, not a break (and a warning) in it
    @torch.no_grad()
    def _initialise(self, z: torch.Tensor) -> None:
        """The codes from random encoder outputs of the first training batch (once: the flag is saved with the codebook)."""
        if bool(self.initialised):
            return
        rows = self._random_rows(z.transpose(1, 2).reshape(-1, self.width).float(), self.size)
        self.codes.copy_(rows)
        self.ema_sum.copy_(rows)
        self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    def forward(self, z: torch.Tensor):
        """Quantise (batch, width, frames); in training also update the codebook.

        Returns codes, the straight-through quantised tensor, the commitment loss and stats.
        """
        if self.training:
            self._initialise(z)
        codes, flat = self.quantise(z)
        stats = {}
        if self.training:
            stats = self._update(flat, codes)
        z_q = self.embed(codes).to(z.dtype)
        commit = (z_q.detach().float() - z.float()).pow(2).mean()
        return codes, z + (z_q - z).detach(), commit, stats
