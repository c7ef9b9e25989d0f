"""Where a training step's time goes: ours per phase and per op, beside the original's phases.

    OMP_WAIT_POLICY=PASSIVE python bench/profile_step.py --model prior|vqvae [--isa avx2] [--peer JUKEBOX_GIT_DIR]

The step benchmarks' reference configurations (bench_prior_step.py, bench_vqvae_step.py), fp32
and eager unless ``--bf16`` / ``--compiled`` (the per-op names are PyTorch's; a compiled step shows
its fused kernels as one entry per graph), 2 threads:

1. phases: forward, backward, optimizer, each timed alone over ``--steps`` steps (medians), and the
   original's same phases from its timing harness (``$JUKEBOX_PEER_HARNESS``) in the same sitting;
2. ops: torch.profiler's self CPU time per op over ``--steps`` steps, the top ``--top``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import add_isa_argument, peer, save, use_isa  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

PEER = {"prior": ("b_", "b_prior_top_factorized_train"), "vqvae": ("a_", "a_vqvae_bottom_hop8_train")}


def prior_parts(steps: int, compiled: bool = False, bf16: bool = False):
    from bench.bench_prior_step import batch_of, config, training_parts

    cfg = config()
    model, opt, loss_of = training_parts(cfg, compiled, bf16)
    return model, opt, [batch_of(cfg, 2, i) for i in range(steps + 2)], loss_of


def vqvae_parts(steps: int, compiled: bool = False, bf16: bool = False):
    from bench.bench_vqvae_step import real_batches, training_parts
    from models.losses import LossScales, mean_spectral_norm
    from models.vqvae import VQVAEConfig

    cfg = VQVAEConfig(level=0, width=32, depth=4)
    data = real_batches(steps + 2, 2, 65_536)
    sample = torch.cat(data).squeeze(-1)
    scales = LossScales(float(sample.var()), mean_spectral_norm(sample, cfg.stft_settings))
    model, opt, loss_of = training_parts(cfg, scales, compiled, bf16)
    return model, opt, data, loss_of


def phases(loss_of, opt, data) -> dict:
    """Median seconds of the forward (with the loss), the backward (with the gradient norm for the prior), the optimizer step."""
    times: dict[str, list[float]] = {"fwd": [], "bwd": [], "opt": []}
    for i, d in enumerate(data):
        t0 = time.perf_counter()
        loss = loss_of(d)
        t1 = time.perf_counter()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if i >= 2:  # after the warm-up
            for k, v in zip(("fwd", "bwd", "opt"), (t1 - t0, t2 - t1, t3 - t2)):
                times[k].append(v)
    return {k: statistics.median(v) for k, v in times.items()}


def op_profile(loss_of, opt, data, top: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for d in data:
            loss = loss_of(d)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "calls_per_step": e.count / len(data), "self_ms_per_step": e.self_cpu_time_total / 1000 / len(data),
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(PEER), default="prior")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compiled", action="store_true", help="the forward through torch.compile (ops become fused kernels)")
    ap.add_argument("--bf16", action="store_true", help="the forward under bf16 autocast")
    ap.add_argument("--peer", default="", help="git directory of openai/jukebox: its phases in the same sitting")
    add_isa_argument(ap)
    args = ap.parse_args()
    use_isa(args.isa)
    torch.set_num_threads(args.threads)
    model, opt, data, loss_of = (prior_parts if args.model == "prior" else vqvae_parts)(args.steps, args.compiled, args.bf16)
    ours = phases(loss_of, opt, data)
    ops = op_profile(loss_of, opt, data[:3], args.top)
    result: dict = {"model": args.model, "threads": args.threads, "compiled": args.compiled, "bf16_autocast": args.bf16,
                    "phases": ours, "ops": ops}
    rows = [[k, f"{1000 * v:.1f}", ""] for k, v in ours.items()]
    if args.peer:
        config, name = PEER[args.model]
        step = peer(args.peer, config, "--no-flops", "--no-ceiling")["results"][name]["step"]
        theirs = {k: step[f"{k}_s"]["median"] for k in ("fwd", "bwd", "opt")}
        result["peer_phases"] = theirs
        rows = [[k, f"{1000 * ours[k]:.1f}", f"{1000 * theirs[k]:.1f}"] for k in ours]
    rows.append(["step", f"{1000 * sum(ours.values()):.1f}", f"{1000 * sum(result['peer_phases'].values()):.1f}" if args.peer else ""])
    kind = ("compiled" if args.compiled else "eager") + (", bf16 autocast" if args.bf16 else ", fp32")
    print(f"{args.model} step, {kind}, {args.threads} threads, ISA profile {args.isa}: median ms per phase")
    print(format_table(["phase", "ours ms", "original ms"], rows))
    print(format_table(["op (ours, self CPU)", "calls per step", "ms per step", "share"],
                       [[o["op"][:48], f"{o['calls_per_step']:.0f}", f"{o['self_ms_per_step']:.1f}", f"{o['share']:.1%}"] for o in ops]))
    variant = f"{args.model}-{args.isa}" + ("-compiled" if args.compiled else "") + ("-bf16" if args.bf16 else "")
    print(save("profile_step", result, variant=variant))


if __name__ == "__main__":
    main()
