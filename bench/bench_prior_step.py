"""Prior training step on the CPU, eager and compiled, beside the original 2020 implementation
(sampling speed: bench/bench_sampling.py).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_prior_step.py [--peer JUKEBOX_GIT_DIR] [--steps 10]

The issue's configuration (the peer harness's configs b and c, ../shared/peer/configs.json):
a top-level prior over 2048 codes, context 2048, width 256, depth 8, 2 heads, factorized
attention in blocks of 64 (row / column / previous-row layers), batch 2, fp32, AdamW, 2
threads, OMP_WAIT_POLICY=PASSIVE.
FLOPs per step are counted by torch's FlopCounterMode (forward + backward); the ceiling is
the best of a few 2048^3 fp32 matmuls on the same threads. With ``--peer``, the original
code is timed by ../shared/peer/run.sh in the same sitting and the ratios are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import common  # noqa: E402
from bench.common import add_isa_argument, add_pairs_argument, alternating_pairs, matmul_ceiling, pairs_line, peer, save, use_isa  # noqa: E402
from models.prior import Prior, PriorConfig  # noqa: E402
from models.transformer import TransformerConfig  # noqa: E402
from pipeline.tables import format_table  # noqa: E402


def config() -> PriorConfig:
    return PriorConfig(level=2, bins=2048, timing=False, n_artists=1, n_genres=1,
                       transformer=TransformerConfig(width=256, depth=8, heads=2, n_ctx=2048, block_len=64))


def batch_of(cfg: PriorConfig, batch: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    data = {"codes": torch.randint(0, cfg.bins, (batch, cfg.n_ctx), generator=g), "artist": torch.zeros(batch, dtype=torch.long),
            "genres": torch.zeros(batch, 1, dtype=torch.long)}
    return {k: v.to(device) for k, v in data.items()}


def training_parts(cfg: PriorConfig, compiled: bool, bf16: bool = False, device: str = "cpu"):
    """(model, optimizer, the loss of a batch), as the runtime trains: fused AdamW, and with
    ``compiled`` the forward and the loss through torch.compile (``--runtime.compile``; the
    optimizer stays eager); with ``bf16`` the forward under bf16 autocast (``--runtime.autocast
    bf16``: fp32 weights and optimizer, not the issue's fp32 step)."""
    torch.manual_seed(0)
    model = Prior(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    loss_from = model.loss_from
    if compiled:
        model.compile()
        loss_from = torch.compile(model.loss_from)  # as the runtime does: the loss a graph of its own

    def loss_of(data):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = model(data)
        return loss_from(out, data)[0]

    return model, opt, loss_of


def training_step(cfg: PriorConfig, compiled: bool, bf16: bool = False, device: str = "cpu"):
    """(one training step of a batch, the model): ``training_parts`` with the gradient clipped at 1."""
    model, opt, loss_of = training_parts(cfg, compiled, bf16, device)

    def step(data):
        loss = loss_of(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return step, model


def time_training(cfg: PriorConfig, steps: int, batch: int, compiled: bool, bf16: bool = False, device: str = "cpu") -> tuple[dict, object]:
    """(figures, the step): the step itself, for the pairs (a second torch.compile of the model would recompile)."""
    from torch.utils.flop_counter import FlopCounterMode

    step, model = training_step(cfg, compiled, bf16, device)
    data = [batch_of(cfg, batch, i, device) for i in range(steps + 2)]
    warm = time.perf_counter()
    for d in data[:2]:
        step(d)
    common.synchronize(device)
    warm = time.perf_counter() - warm
    times, cpu = common.timed_calls(step, data[2:], device)
    with FlopCounterMode(display=False) as counter:
        loss, _ = Prior(cfg).to(device).loss(data[0])  # eager: the counter sees aten ops
        loss.backward()
    return {"compiled": compiled, "bf16_autocast": bf16, "first_two_steps_s": warm,
            "step_s": statistics.median(times), "step_s_min": min(times),
            "steps_s": times, "cpu_s": statistics.median(cpu),
            "flops_per_step": counter.get_total_flops(), "params": sum(p.numel() for p in model.parameters())}, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also time the compiled step under bf16 autocast (where the CPU has it)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="also time the compiled step")
    ap.add_argument("--peer", default="", help="git directory of openai/jukebox: time the original in the same sitting")
    add_isa_argument(ap)
    add_pairs_argument(ap)
    common.add_device_argument(ap)
    args = ap.parse_args()
    use_isa(args.isa)
    device = common.resolve_device(args.device)
    torch.set_num_threads(args.threads)
    cfg = config()
    ceiling = matmul_ceiling(device=device)
    eager, eager_step = time_training(cfg, args.steps, args.batch, compiled=False, device=device)
    train, train_step = time_training(cfg, args.steps, args.batch, compiled=True, device=device) if args.compile else (eager, eager_step)
    steps = [(eager, eager_step), (train, train_step)]
    floor_step, _ = training_step(cfg, False, False, device)
    floor_data = batch_of(cfg, args.batch, 0, device)
    floor = common.arithmetic_floor(lambda: floor_step(floor_data))
    mfu_eager = eager["flops_per_step"] / eager["step_s"] / ceiling
    mfu = train["flops_per_step"] / train["step_s"] / ceiling
    result = {"config": {"n_ctx": 2048, "width": 256, "depth": 8, "heads": 2, "block_len": 64, "batch": args.batch, "fp32": True,
                         "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]},
              "matmul_ceiling_flops": ceiling, "arithmetic_floor": floor,
              "train_eager": eager, "mfu_eager": mfu_eager, "train": train, "mfu": mfu}
    rows = [[f"the step's matmuls and attention alone ({floor['calls']} calls, fp32)", f"{floor['floor_s']:.3f} s",
             f"{eager['flops_per_step'] / 1e9:.1f}", f"{eager['flops_per_step'] / floor['floor_s'] / ceiling:.1%}"],
            ["ours, eager: train step", f"{eager['step_s']:.3f} s", f"{eager['flops_per_step'] / 1e9:.1f}", f"{mfu_eager:.1%}"]]
    if args.compile:
        rows.append([f"ours, compiled: train step (compile {train['first_two_steps_s']:.0f} s once)", f"{train['step_s']:.3f} s",
                     f"{train['flops_per_step'] / 1e9:.1f}", f"{mfu:.1%}"])
    if args.bf16:
        from pipeline.train.engine import bf16_supported

        if not bf16_supported(device):
            print(f"--bf16: skipped, this {device} (or ISA profile) has no bf16 compute")
        else:
            bf16, bf16_step = time_training(cfg, args.steps, args.batch, compiled=True, bf16=True, device=device)
            result["train_bf16"] = bf16
            steps.append((bf16, bf16_step))
            rows.append(["ours, compiled + bf16 autocast (not fp32)", f"{bf16['step_s']:.3f} s", f"{bf16['flops_per_step'] / 1e9:.1f}", ""])
    if args.peer:
        original = peer(args.peer, "b_")
        result["peer"] = original
        b = original["summary"]["b_prior_top_factorized_train"]
        peer_step = b["median_s"]
        result["ratios"] = {"train_step_speedup": peer_step / train["step_s"], "train_step_speedup_eager": peer_step / eager["step_s"]}
        if "train_bf16" in result:
            result["ratios"]["train_step_speedup_bf16_autocast"] = peer_step / result["train_bf16"]["step_s"]
        result["ratios"]["most_over_original_at_the_floor"] = peer_step / floor["floor_s"]
        rows += [["original 2020: train step", f"{peer_step:.3f} s", f"{b['gflop_counted']:.1f}", f"{b.get('mfu_median') or 0:.1%}"],
                 ["the most any fp32 step of this arithmetic gains over it (original / floor)",
                  f"{result['ratios']['most_over_original_at_the_floor']:.2f}x", "", ""],
                 ["speed-up (compiled / eager)",
                  f"{result['ratios']['train_step_speedup']:.2f}x / {result['ratios']['train_step_speedup_eager']:.2f}x", "", ""]]
    if args.peer and args.pairs:
        # the fastest of our variants at the best precision this CPU has, against the original, in turns
        best, step = min(steps, key=lambda vs: vs[0]["step_s"])
        data = [batch_of(cfg, args.batch, i, device) for i in range(args.steps)]

        def theirs() -> float:
            report = peer(args.peer, "b_", "--no-flops", "--no-ceiling")
            return report["summary"]["b_prior_top_factorized_train"]["median_s"]

        result["pairs"] = alternating_pairs(lambda: statistics.median(common.timed_calls(step, data, device)[0]), theirs, args.pairs)
        result["pairs"]["variant"] = {"compiled": best["compiled"], "bf16_autocast": best["bf16_autocast"]}
        label = ("compiled" if best["compiled"] else "eager") + (" + bf16 autocast" if best["bf16_autocast"] else ", fp32")
    result["device"] = common.device_facts(device)
    print(f"prior n_ctx 2048, width 256, depth 8, 2 heads, blocks of 64, batch {args.batch}, fp32, {device}, {args.threads} threads; "
          f"matmul ceiling {ceiling / 1e9:.1f} GFLOP/s")
    print(format_table(["what", "time", "GFLOP per step", "MFU"], rows))
    if "pairs" in result:
        print(pairs_line(f"train step, ours {label}", result["pairs"]))
    print(save("prior_step", result))


if __name__ == "__main__":
    main()
