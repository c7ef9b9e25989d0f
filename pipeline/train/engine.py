"""The DeepSpeed engine of a worker: its config from ours, precision, AdamW with parameter groups.

ZeRO 0-3 from ``infra/deepspeed/zero<N>.json`` with our batch, accumulation, clipping and
precision; offload with DeepSpeed's CPU Adam; the model built under ``deepspeed.zero.Init``
at ZeRO-3 so no rank ever holds it whole.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch

from pipeline.train.config import OptimConfig, RuntimeConfig
from pipeline.train.protocol import TrainSpec

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "deepspeed"
NO_DECAY_MODULES = (torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm,
                    torch.nn.modules.batchnorm._BatchNorm)


def deepspeed_config(cfg: RuntimeConfig, optim: OptimConfig, world: int, device: str) -> dict:
    ds = json.loads((DEEPSPEED_CONFIGS / f"zero{cfg.zero_stage}.json").read_text())
    ds.update(train_micro_batch_size_per_gpu=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
              train_batch_size=cfg.batch_size * cfg.grad_accum * world, gradient_clipping=optim.grad_clip,
              steps_per_print=10 ** 9, zero_allow_untested_optimizer=True)
    precision = resolve_precision(cfg.precision, device)
    ds["bf16"] = {"enabled": precision == "bf16"}
    ds["fp16"] = {"enabled": precision == "fp16"}
    if cfg.offload:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    return ds


def bf16_supported(device: str) -> bool:
    """bf16 compute the hardware has: a GPU's, or a CPU's AVX512-BF16/AMX as oneDNN sees it."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_context(cfg: RuntimeConfig, device: str):
    """The span each forward runs in: torch.autocast(bf16) when asked for and the hardware has it."""
    if cfg.autocast == "off":
        return contextlib.nullcontext()
    if resolve_precision(cfg.precision, device) != "fp32":
        raise RuntimeError("runtime.autocast needs fp32 weights (runtime.precision fp32)")
    if not bf16_supported(device):
        raise RuntimeError(f"runtime.autocast bf16: this {device} has no bf16 compute (no AVX512-BF16 or AMX); use autocast off")
    return torch.autocast(device, dtype=torch.bfloat16)


def resolve_precision(precision: str, device: str) -> str:
    if precision != "auto":
        return precision
    return "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices only; none on biases, norms, embeddings, or
    what the model names in ``no_weight_decay()``."""
    extra = set(getattr(model, "no_weight_decay", lambda: ())())
    params, decayed = {}, {}  # by id: a tied weight (an output layer sharing the embedding's) is one parameter
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            ndim = len(getattr(p, "ds_shape", p.shape))  # ZeRO-3 partitioned parameters keep their shape here
            wants = not (ndim < 2 or isinstance(module, NO_DECAY_MODULES) or full in extra)
            params[id(p)] = p
            decayed[id(p)] = decayed.get(id(p), True) and wants  # any owner that says no decay wins (an embedding)
    decay = [p for i, p in params.items() if decayed[i]]
    no_decay = [p for i, p in params.items() if not decayed[i]]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, offload: bool, device: str) -> torch.optim.Optimizer:
    groups = param_groups(model, optim.weight_decay)
    kwargs = dict(lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps)
    if offload:  # DeepSpeed refuses ZeRO-Offload with a torch optimizer (zero_force_ds_cpu_optimizer)
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    # fused: one kernel over all parameters instead of a dozen ops per parameter (CPU too since torch 2.4)
    return torch.optim.AdamW(groups, fused=device in ("cuda", "cpu"), **kwargs)


def seed_step(cfg: RuntimeConfig, step: int, rank: int) -> None:
    torch.manual_seed(hash((cfg.seed, step, rank)) % 2 ** 63)


def build_engine(spec: TrainSpec, world: int, device: str):
    from pipeline.services import use_private_compile_cache, use_venv_torch_extensions

    use_venv_torch_extensions()  # before DeepSpeed loads an op (a worker on a cluster node too)
    use_private_compile_cache()
    import deepspeed

    cfg = spec.runtime
    ds_config = deepspeed_config(cfg, spec.optim, world, device)
    seed_step(cfg, -1, 0)  # the same initial weights on every rank
    with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed's "op built successfully" line per rank (a print, not a log)
        deepspeed.init_distributed()  # adopts the process group Ray Train made
    partitioned = deepspeed.zero.Init(config_dict_or_path=ds_config) if cfg.zero_stage == 3 else contextlib.nullcontext()
    with partitioned:
        model = spec.task.build_model()  # ZeRO-3: each module's parameters are partitioned as it is built
    if cfg.compile:
        model.compile()  # in place: the state dict keeps its names, so checkpoints and the registry do not change
        if hasattr(model, "loss_from"):
            # the loss a graph of its own: a prior's cross-entropy over its codebook fuses into a few loops
            # instead of a log-softmax, a zero-filled gradient and a copy of the logits each (the reference
            # prior's step: 230 -> 198 ms in bf16 autocast, 333 -> 320 ms in fp32, measured)
            model.loss_from = torch.compile(model.loss_from)
    optimizer = build_optimizer(model, spec.optim, cfg.offload, device)
    with contextlib.redirect_stdout(io.StringIO()):
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float16 if ds_config["fp16"]["enabled"] else torch.float32
    return engine, dtype
