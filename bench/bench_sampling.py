"""Sampling speed: tokens per second of the reference prior at batch 1 and 8 beside the original
2020 implementation, and the wall time of 10 s of fully upsampled audio with the tiny models.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_sampling.py [--peer JUKEBOX_GIT_DIR] [--song-seconds 10]

1. The issue's reference model (the peer harness's config c: context 2048, width 256, depth 8,
   2 heads, blocks of 64, 2048 bins, random weights), 512 tokens from an empty context with the
   key/value cache: our sampler eager and compiled, on 1 and 2 threads, batch 1 and 8; the
   original timed by ../shared/peer/run.sh in the same sitting (2 threads, batch 1).
2. ``jobs/sample.py``'s whole path (top, middle, bottom, decode) with the tiny presets' sizes
   (registered with random weights: speed does not depend on what they learned) for a song of
   ``--song-seconds``, with 1 and 2 Ray workers for the upsampling: wall time and real-time factor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from bench.bench_prior_step import config as reference_config  # noqa: E402
from bench.common import add_isa_argument, peer, save, use_isa  # noqa: E402
from models.prior import Prior  # noqa: E402
from models.sampling import SamplingSettings, TokenSampler  # noqa: E402
from pipeline.tables import format_table  # noqa: E402


def time_tokens(prior: Prior, batch: int, threads: int, compiled: bool, tokens: int, repeats: int = 3) -> dict:
    """The median of ``repeats`` windows after a first one (which compiles): this VM's timings wander by ~20 %."""
    torch.set_num_threads(threads)
    sampler = TokenSampler(prior, SamplingSettings(temperature=1.0), compile=compiled)
    cond = {"artist": torch.zeros(batch, dtype=torch.long), "genres": torch.zeros(batch, 1, dtype=torch.long)}
    empty = torch.zeros(batch, 0, dtype=torch.long)
    t = time.perf_counter()
    sampler.window(cond, empty, tokens, torch.Generator().manual_seed(0))  # the compile, when compiled
    first = time.perf_counter() - t
    times = []
    for seed in range(1, repeats + 1):
        t = time.perf_counter()
        sampler.window(cond, empty, tokens, torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    return {"batch": batch, "threads": threads, "compiled": compiled, "tokens": tokens, "seconds": seconds, "all_seconds": times,
            "first_window_s": first, "ms_per_step": 1000 * seconds / tokens, "tokens_per_s": batch * tokens / seconds}


def whole_song(seconds: float, workers: int, store: dict, out: Path) -> dict:
    from pipeline.sample.config import SampleConfig
    from pipeline.sample.run import sample

    cfg = SampleConfig(out=str(out), duration=seconds, workers=workers, lyrics="la la la " * 40, seed=0,
                       mlflow_tracking_uri=store["uri"])
    t = time.perf_counter()
    summary = sample(cfg)
    wall = time.perf_counter() - t
    return {"workers": workers, "seconds_of_audio": seconds, "wall_s": wall, "real_time_factor": wall / seconds,
            **{k: v for k, v in summary.items() if k.endswith(("_tokens_per_s", "_seconds", "_windows"))}}


def register_tiny(tmp: Path) -> dict:
    from registered_vqvae import register_tiny_prior, register_tiny_vqvae

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    vq = {lv: register_tiny_vqvae(uri, lv) for lv in ("top", "middle", "bottom")}
    register_tiny_prior(uri, "top", vq["top"])
    register_tiny_prior(uri, "middle", vq["middle"], vq["top"])
    register_tiny_prior(uri, "bottom", vq["bottom"], vq["middle"])
    return {"uri": uri}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", default="", help="git directory of openai/jukebox: time the original in the same sitting")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--song-seconds", type=float, default=10.0)
    ap.add_argument("--skip-song", action="store_true")
    add_isa_argument(ap)
    args = ap.parse_args()
    use_isa(args.isa)
    torch.manual_seed(0)
    prior = Prior(reference_config()).eval()
    runs = [time_tokens(prior, batch, threads, compiled, args.tokens)
            for batch in (1, 8) for compiled in (False, True) for threads in (1, 2)]
    result: dict = {"reference": {"n_ctx": 2048, "width": 256, "depth": 8, "heads": 2, "block_len": 64, "bins": 2048},
                    "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "tokens": runs}
    rows = [[f"ours, {'compiled' if r['compiled'] else 'eager'}", r["batch"], r["threads"], f"{r['ms_per_step']:.3f}",
             f"{r['tokens_per_s']:,.0f}", f"{r['first_window_s']:.1f}"] for r in runs]
    best1 = max((r for r in runs if r["batch"] == 1), key=lambda r: r["tokens_per_s"])
    if args.peer:
        original = peer(args.peer, "c_")
        ms = original["summary"]["c_prior_top_sample_kvcache"]["ms_per_token_median"]
        result["peer"] = original
        result["speedup_batch1"] = best1["tokens_per_s"] / (1000 / ms)
        rows.append(["original 2020", 1, 2, f"{ms:.3f}", f"{1000 / ms:,.0f}", ""])
    print(f"reference prior (context 2048, width 256, depth 8, 2 heads), {args.tokens} tokens, OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}")
    print(format_table(["sampler", "batch", "threads", "ms per step", "tokens/s", "first window s (compile)"], rows))
    if "speedup_batch1" in result:
        print(f"batch 1: {result['speedup_batch1']:.1f}x the original's tokens per second")
    if not args.skip_song:
        with tempfile.TemporaryDirectory() as tmp:
            store = register_tiny(Path(tmp))
            songs = [whole_song(args.song_seconds, w, store, Path(tmp) / f"w{w}") for w in (1, 2)]
        result["song"] = songs
        print(f"\n{args.song_seconds} s of fully upsampled audio, tiny presets (random weights), defaults (compile auto, hop 0.5)")
        print(format_table(["Ray workers", "wall s", "real-time factor", "top tok/s", "middle tok/s", "bottom tok/s"],
                           [[s["workers"], f"{s['wall_s']:.1f}", f"{s['real_time_factor']:.2f}", f"{s.get('top_tokens_per_s', 0):,.0f}",
                             f"{s.get('middle_tokens_per_s', 0):,.0f}", f"{s.get('bottom_tokens_per_s', 0):,.0f}"] for s in songs]))
    print(save("sampling", result))


if __name__ == "__main__":
    main()
