"""Training metrics that stay on the device until a log step, and what each rank holds in memory."""

from __future__ import annotations

import torch


class MetricAccumulator:
    """Sums of each metric since the last log, on the device: no host sync between logs.

    At a log step the sums of every rank are reduced in one collective and divided by
    their counts: the logged value is the mean over ranks, steps and micro-steps.
    """

    def __init__(self, device: torch.device):
        self.device, self.sums, self.counts = device, {}, {}
        self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float().reshape(())
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def watch_loss(self, loss: torch.Tensor, step: int) -> None:
        """Remember the first step whose loss was NaN or infinite, without leaving the device."""
        bad = ~torch.isfinite(loss.detach()) & (self.first_nonfinite < 0)
        self.first_nonfinite = torch.where(bad, torch.full_like(self.first_nonfinite, step), self.first_nonfinite)

    def nonfinite(self, world: int) -> dict[int, int]:
        """{rank: first bad step} over all ranks (a collective: every rank calls it at the same steps)."""
        import torch.distributed as dist

        if world == 1:
            gathered = [self.first_nonfinite]
        else:
            gathered = [torch.empty_like(self.first_nonfinite) for _ in range(world)]
            dist.all_gather(gathered, self.first_nonfinite)
        return {r: int(s) for r, s in enumerate(gathered) if int(s) >= 0}

    def reduce(self, world: int) -> dict[str, float]:
        import torch.distributed as dist

        keys = sorted(self.sums)
        if not keys:
            return {}
        packed = torch.stack([self.sums[k] / self.counts[k] for k in keys])
        if world > 1:
            dist.all_reduce(packed)
            packed /= world
        values = packed.tolist()
        self.sums, self.counts = {}, {}
        return dict(zip(keys, values))


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def rank_memory(engine) -> dict[str, float]:
    """What this rank holds of the model state (MB) and its peak resident memory (a log-step extra).

    Parameters as stored on this rank (ZeRO-3 keeps a 1/world partition, ``ds_tensor``), the
    optimizer's own tensors (Adam moments; ZeRO-1/2 also their fp32 partition of the weights)
    and the gradients kept between steps."""
    import resource

    params = [getattr(p, "ds_tensor", p) for p in engine.module.parameters()]
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    state = [t for st in inner.state.values() for t in st.values()]
    opt_params = [p for g in inner.param_groups for p in g["params"]]
    own = {id(p) for p in engine.module.parameters()}
    copies = [p for p in opt_params if id(p) not in own]  # ZeRO-1/2/3: the optimizer's fp32 partitions
    grads = [p.grad for p in opt_params if p.grad is not None] + [p.grad for p in engine.module.parameters() if p.grad is not None]
    kept = getattr(engine.optimizer, "averaged_gradients", None) or {}  # ZeRO-2/3: this rank's reduced gradient partition
    grads += [t for v in (kept.values() if isinstance(kept, dict) else kept) for t in (v if isinstance(v, list) else [v])]
    grads = list({id(g): g for g in grads}.values())
    mb = 2 ** 20
    return {"mem_params_mb": _tensor_bytes(params) / mb, "mem_optimizer_mb": (_tensor_bytes(state) + _tensor_bytes(copies)) / mb,
            "mem_grads_mb": _tensor_bytes(grads) / mb, "mem_rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
