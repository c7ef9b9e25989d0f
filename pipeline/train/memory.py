"""Will the model fit? The memory of its training state per rank, estimated before any worker starts.

Per parameter, as DeepSpeed keeps it (the ZeRO paper's accounting, section 3): the weights
in the training precision (4 bytes in fp32, 2 in bf16/fp16), their gradients in the same,
and Adam's two fp32 moments (8 bytes) plus an fp32 master copy (4 bytes; DeepSpeed's ZeRO
1-3 keep one in fp32 training too).
ZeRO-1 partitions the optimizer state over the ranks, ZeRO-2 the gradients too, ZeRO-3 the
weights too; offload moves the optimizer state to the host. Activations come on top and are
not counted: a refused model certainly does not fit; an accepted one may still not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import ConfigError
from pipeline.train.config import RuntimeConfig

GIB = 2 ** 30


@dataclass
class StateEstimate:
    params: int
    weights: float  # bytes per rank
    grads: float
    optimizer: float  # on the host when offloaded
    offloaded: bool

    @property
    def device_bytes(self) -> float:
        return self.weights + self.grads + (0 if self.offloaded else self.optimizer)

    @property
    def rank_bytes(self) -> float:
        return self.weights + self.grads + self.optimizer

    def describe(self) -> str:
        where = " on the host" if self.offloaded else ""
        return (f"{self.params / 1e6:,.1f} M parameters: weights {self.weights / GIB:.1f} GiB, gradients {self.grads / GIB:.1f} GiB, "
                f"optimizer state {self.optimizer / GIB:.1f} GiB{where} per rank")


def count_parameters(build: Callable) -> int:
    """Parameters of the model ``build()`` makes, built on the meta device (no memory, a second for 5 B)."""
    import torch

    with torch.device("meta"):
        model = build()
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def estimate(params: int, cfg: RuntimeConfig, precision: str) -> StateEstimate:
    world, stage = cfg.workers, cfg.zero_stage
    half = precision in ("bf16", "fp16")
    per_weight = 2 if half else 4
    optimizer = params * (8 + (4 if half or stage >= 1 else 0))  # ZeRO 1-3 keep an fp32 partition of the weights in fp32 too
    return StateEstimate(params=params,
                         weights=params * per_weight / (world if stage >= 3 else 1),
                         grads=params * per_weight / (world if stage >= 2 else 1),
                         optimizer=optimizer / (world if stage >= 1 else 1), offloaded=cfg.offload)


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(build: Callable, cfg: RuntimeConfig, what: str, local: bool, instead: str) -> StateEstimate:
    """Refuse (``ConfigError``) a model whose training state cannot fit where it would run.

    ``local``: the ranks share this machine (an embedded Ray): on CPU all of them count against
    its memory. On a cluster the ranks' nodes are unknown here, and only a GPU rank's own
    device is checked, against this machine's GPU when it has one."""
    import torch

    from pipeline.train.engine import resolve_precision

    gpu = cfg.use_gpu and torch.cuda.is_available()
    est = estimate(count_parameters(build), cfg, resolve_precision(cfg.precision, "cuda" if gpu else "cpu"))
    if gpu:
        have, need, where = torch.cuda.get_device_properties(0).total_memory, est.device_bytes, "this machine's GPU"
    elif local:
        have, need, where = host_memory_bytes(), est.rank_bytes * cfg.workers, f"this machine ({cfg.workers} rank(s))"
    else:
        return est
    if need > have:
        raise ConfigError(f"{what} cannot train here: {est.describe()} (ZeRO-{cfg.zero_stage}"
                          f"{', offload' if cfg.offload else ''}, {cfg.workers} rank(s)); {where} needs {need / GIB:.1f} GiB "
                          f"before activations and has {have / GIB:.1f} GiB. {instead}")
    return est
