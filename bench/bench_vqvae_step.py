"""VQ-VAE training step: time and model FLOP utilisation on the CPU, model only (no Ray, no DeepSpeed).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_vqvae_step.py [--threads 2] [--steps 10]

The configuration of the issue's reference comparison: bottom level at width 32, depth 4,
hop 8, codebook 2048 x 64, batch 2 x 65,536 mono samples of real music (the shared
songs, else noise), fp32, Adam. FLOPs per step are counted by torch's FlopCounterMode
(forward + backward; the codebook's EMA update included); the ceiling is the best of
a few large fp32 matmuls measured on the same threads. The distributed runtime adds
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

from bench.common import REALDATA, save  # noqa: E402
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


def matmul_ceiling(size: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=65_536)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = VQVAEConfig(level=0, width=32, depth=4)
    batches = real_batches(args.steps + 3, args.batch, args.length)
    sample = torch.cat(batches).squeeze(-1)
    scales = LossScales(float(sample.var()), mean_spectral_norm(sample, cfg.stft_settings))
    rows, results = [], {}
    for checkpointing in (False, True):
        cfg.checkpoint_activations = checkpointing
        model = VQVAE(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)

        def step(x, model=model, opt=opt):
            parts = vqvae_loss(model(x), x, cfg, scales)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()

        for x in batches[:3]:
            step(x)  # warm-up (codebook initialisation, allocator)
        times = []
        for x in batches[3:]:
            t = time.perf_counter()
            step(x)
            times.append(time.perf_counter() - t)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step(batches[0])
        flops = counter.get_total_flops()
        median = statistics.median(times)
        results[f"checkpointing={checkpointing}"] = {"step_s": median, "steps_s": times, "flops_per_step": flops}
        rows.append([str(checkpointing), round(median, 3), round(flops / 1e9, 1), round(flops / median / 1e9, 2)])
    ceiling = matmul_ceiling()
    for r in rows:
        r.append(f"{r[3] * 1e9 / ceiling:.1%}")
    print(f"bottom level, width 32, depth 4, batch {args.batch} x {args.length}, fp32, {args.threads} threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; matmul ceiling {ceiling / 1e9:.1f} GFLOP/s")
    print(format_table(["activation checkpointing", "step s (median)", "GFLOP per step", "GFLOP/s", "MFU"], rows))
    print(save("vqvae_step", {"config": {"width": 32, "depth": 4, "batch": args.batch, "length": args.length,
                                         "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]},
                              "matmul_ceiling_flops": ceiling, "results": results}))


if __name__ == "__main__":
    main()
