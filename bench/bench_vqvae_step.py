"""VQ-VAE training step: time and model FLOP utilisation on the CPU, model only (no Ray, no DeepSpeed).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_vqvae_step.py [--threads 2] [--steps 10]

The configuration of the issue's reference comparison: bottom level at width 32, depth 4,
hop 8, codebook 2048 x 64, batch 2 x 65,536 mono samples of real music (the shared
songs, else noise), fp32, Adam. FLOPs per step are counted by torch's FlopCounterMode
(forward + backward; the codebook's EMA update included); the ceiling is the best of
a few large fp32 matmuls measured on the same threads. Variants: fp32, bf16 autocast (fp32
weights; only on a CPU with AVX512-BF16 or AMX), each eager and compiled. ``--original``
takes the original's step times from ``../shared/peer/run.sh <jukebox git dir> --only a_``,
run in the same sitting, and prints the ratio. The distributed runtime adds
its own cost on top (measured separately, with the runtime).
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench import common  # noqa: E402
from bench.common import (  # noqa: E402
    REALDATA,
    add_device_argument,
    add_isa_argument,
    add_pairs_argument,
    alternating_pairs,
    device_facts,
    matmul_ceiling,
    pairs_line,
    peer,
    resolve_device,
    save,
    synchronize,
    use_isa,
)
from models.losses import LossScales, mean_spectral_norm, vqvae_loss  # noqa: E402
from models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from pipeline.tables import format_table  # noqa: E402


def real_batches(n: int, batch: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    from pipeline.audio import decode

    rng = np.random.default_rng(seed)
    songs = [decode(p, 0, 3600).samples for p in sorted((REALDATA / "mp3").glob("*.mp3"))] if REALDATA.exists() else []
    out = []
    for _ in range(n):
        if songs:
            items = []
            for _ in range(batch):
                s = songs[rng.integers(len(songs))]
                o, w = rng.integers(0, len(s) - length), rng.random()
                items.append(s[o:o + length, 0] * w + s[o:o + length, 1] * (1 - w))
            out.append(torch.from_numpy(np.stack(items)[:, :, None].astype(np.float32)))
        else:
            out.append(torch.randn(batch, length, 1) * 0.1)
    return out


def training_parts(cfg: VQVAEConfig, scales: LossScales, compiled: bool, bf16: bool, device: str = "cpu"):
    """(model, optimizer, the loss of a batch), as the runtime trains (a fused Adam; ``--runtime.compile``, ``--runtime.autocast``)."""
    torch.manual_seed(0)
    model = VQVAE(cfg).to(device)
    if compiled:
        model.compile()  # as the runtime does (in place)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, fused=True)

    def loss_of(x):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        return vqvae_loss(out, x, cfg, scales)["loss"]

    return model, opt, loss_of


def training_step(cfg: VQVAEConfig, scales: LossScales, compiled: bool, bf16: bool, device: str = "cpu"):
    """One training step of a batch (``training_parts``)."""
    _, opt, loss_of = training_parts(cfg, scales, compiled, bf16, device)

    def step(x):
        loss = loss_of(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


VARIANTS = {  # name: (torch.compile, bf16 autocast) -- the job's --runtime.compile and --runtime.autocast
    "fp32": (False, False), "bf16 autocast": (False, True), "compiled fp32": (True, False), "compiled + bf16 autocast": (True, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=65_536)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--checkpointing", action="store_true", help="also each variant with activation checkpointing")
    ap.add_argument("--original", type=float, nargs="*", default=[],
                    help="the original's step times (s) measured in the same sitting with ../shared/peer/run.sh --only a_")
    ap.add_argument("--peer", default="", help="git directory of openai/jukebox: time the original in the same sitting")
    add_isa_argument(ap)
    add_pairs_argument(ap)
    add_device_argument(ap)
    args = ap.parse_args()
    use_isa(args.isa)
    device = resolve_device(args.device)
    from pipeline.train.engine import bf16_supported

    torch.set_num_threads(args.threads)
    cfg = VQVAEConfig(level=0, width=32, depth=4)
    batches = real_batches(args.steps + 3, args.batch, args.length)
    sample = torch.cat(batches).squeeze(-1)
    scales = LossScales(float(sample.var()), mean_spectral_norm(sample, cfg.stft_settings))
    batches = [b.to(device) for b in batches]
    rows, results, built = [], {}, {}
    for name in args.variants.split(","):
        compiled, bf16 = VARIANTS[name]
        if bf16 and not bf16_supported(device):
            print(f"{name}: skipped, this {device} has no bf16 compute" + (" (no AVX512-BF16 or AMX)" if device == "cpu" else ""))
            continue
        for checkpointing in (False, True) if args.checkpointing else (False,):
            cfg.checkpoint_activations = checkpointing
            step = training_step(cfg, scales, compiled, bf16, device)
            t = time.perf_counter()
            for x in batches[:3]:
                step(x)  # warm-up (codebook initialisation, allocator, compilation)
            synchronize(device)
            warmup = time.perf_counter() - t
            times = common.timed_calls(step, batches[3:], device)[0]
            built[name + (" + checkpointing" if checkpointing else "")] = step
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                step(batches[0])
            flops = counter.get_total_flops()
            median = statistics.median(times)
            key = name + (" + checkpointing" if checkpointing else "")
            results[key] = {"step_s": median, "steps_s": times, "warmup_s": warmup, "flops_per_step": flops, "compiled": compiled,
                            "bf16_autocast": bf16, "checkpointing": checkpointing}
            rows.append([key, round(median, 3), round(warmup, 1), round(flops / 1e9, 1), round(flops / median / 1e9, 2)])
    ceiling = matmul_ceiling(device=device)
    cfg.checkpoint_activations = False
    floor_step = training_step(cfg, scales, False, False, device)
    floor_step(batches[0])  # the codebook's initialisation is not a step's arithmetic
    floor = common.arithmetic_floor(lambda: floor_step(batches[1]))
    pairs = None
    if args.peer and args.pairs:
        # the fastest variant (without checkpointing) against the original, in turns
        # the same step object: a second torch.compile of the model would recompile, and past dynamo's
        # recompile limit run eager without a word
        name, best = min(((k, v) for k, v in results.items() if not v["checkpointing"]), key=lambda kv: kv[1]["step_s"])
        step = built[name]

        def theirs() -> float:
            return peer(args.peer, "a_", "--no-flops", "--no-ceiling")["summary"]["a_vqvae_bottom_hop8_train"]["median_s"]

        pairs = alternating_pairs(lambda: statistics.median(common.timed_calls(step, batches[3:], device)[0]), theirs, args.pairs)
        pairs["variant"] = name
        args.original = [p["original_s"] for p in pairs["pairs"]]
    original = statistics.median(args.original) if args.original else None
    for r in rows:
        r += [f"{r[4] * 1e9 / ceiling:.1%}", f"{original / r[1]:.2f}x" if original else ""]
    print(f"bottom level, width 32, depth 4, batch {args.batch} x {args.length}, {device}, {args.threads} threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; fp32 matmul ceiling {ceiling / 1e9:.1f} GFLOP/s"
          + (f"; the original: {original:.3f} s per step (median of {[round(o, 3) for o in args.original]})" if original else ""))
    print(format_table(["variant", "step s (median)", "warm-up s", "GFLOP per step", "GFLOP/s", "of fp32 ceiling", "vs original"],
                       rows))
    print(f"the step's convolutions and matmuls alone (fp32, {floor['calls']} calls): {floor['floor_s']:.3f} s"
          + (f"; the most any fp32 step of it gains over the original: {original / floor['floor_s']:.2f}x" if original else ""))
    if pairs:
        print(pairs_line(f"train step, ours {pairs['variant']}", pairs))
    print(save("vqvae_step", {"config": {"width": 32, "depth": 4, "batch": args.batch, "length": args.length,
                                         "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]},
                              "matmul_ceiling_flops": ceiling, "arithmetic_floor": floor, "original_step_s": args.original,
                              "results": results,
                              "device": device_facts(device),
                              **({"pairs": pairs} if pairs else {})}))


if __name__ == "__main__":
    main()
