"""Sampling speed: tokens per second of the reference prior at batch 1 and 8 beside the original
2020 implementation, and the wall time of 10 s of fully upsampled audio with the tiny models.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_sampling.py [--peer JUKEBOX_GIT_DIR] [--song-seconds 10]

1. The issue's reference model (the peer harness's config c: context 2048, width 256, depth 8,
   2 heads, blocks of 64, 2048 bins, random weights), 512 tokens from an empty context with the
   key/value cache: our sampler eager and compiled, on 1 and 2 threads, batch 1 and 8; the
   original timed by ../shared/peer/run.sh in the same sitting (2 threads, batch 1).
2. A level of 4 windows at hop 0.5 (5,120 tokens; each later window continues the previous one's
   last 1,024 tokens): its time against its new tokens alone (5,120 x the per-token time of an
   empty-context window), with the known context in one batched forward (the prefill) and fed
   one token at a time (as before the prefill).
3. With ``--peer``, ``--pairs`` alternating measurements of the batch-1 sampler against the original.
4. ``jobs/sample.py``'s whole path (top, middle, bottom, decode) with the tiny presets' sizes
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
from bench.common import (  # noqa: E402
    add_device_argument,
    add_isa_argument,
    add_pairs_argument,
    alternating_pairs,
    device_facts,
    pairs_line,
    peer,
    resolve_device,
    save,
    synchronize,
    use_isa,
)
from models.prior import Prior  # noqa: E402
from models.sampling import SamplingSettings, TokenSampler, window_starts  # noqa: E402
from pipeline.tables import format_table  # noqa: E402


def device_of(prior: Prior) -> str:
    return next(prior.parameters()).device.type


def inputs(prior: Prior, batch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The reference prior's conditioning (no labels) and an empty context, on its device."""
    device = device_of(prior)
    cond = {"artist": torch.zeros(batch, dtype=torch.long, device=device), "genres": torch.zeros(batch, 1, dtype=torch.long, device=device)}
    return cond, torch.zeros(batch, 0, dtype=torch.long, device=device)


def window_seconds(sampler: TokenSampler, batch: int, tokens: int, seeds) -> list[float]:
    """Seconds of one window of ``tokens`` from an empty context per seed (the device's queued work included)."""
    cond, empty = inputs(sampler.prior, batch)
    times = []
    for seed in seeds:
        t = time.perf_counter()
        sampler.window(cond, empty, tokens, torch.Generator().manual_seed(seed))
        synchronize(device_of(sampler.prior))
        times.append(time.perf_counter() - t)
    return times


def time_tokens(prior: Prior, batch: int, threads: int, compiled: bool, tokens: int, repeats: int = 3) -> dict:
    """The median of ``repeats`` windows after a first one (which compiles): this VM's timings wander by ~20 %."""
    torch.set_num_threads(threads)
    sampler = TokenSampler(prior, SamplingSettings(temperature=1.0), compile=compiled)
    first, *times = window_seconds(sampler, batch, tokens, range(repeats + 1))  # the first compiles, when compiled
    seconds = statistics.median(times)
    return {"batch": batch, "threads": threads, "compiled": compiled, "tokens": tokens, "seconds": seconds, "all_seconds": times,
            "first_window_s": first, "ms_per_step": 1000 * seconds / tokens, "tokens_per_s": batch * tokens / seconds}


def time_level(prior: Prior, threads: int, windows: int = 4, repeats: int = 2, compiled: bool = True) -> dict:
    """A level of ``windows`` windows at hop 0.5, compiled, batch 1: with the prefill and without, against its new tokens alone."""
    torch.set_num_threads(threads)
    n_ctx = prior.cfg.n_ctx
    total = n_ctx + (windows - 1) * n_ctx // 2
    cond, _ = inputs(prior, 1)

    def level(sampler: TokenSampler, seed: int) -> tuple[float, torch.Tensor]:
        codes = torch.zeros(1, 0, dtype=torch.long, device=device_of(prior))
        t = time.perf_counter()
        for start, end in window_starts(total, n_ctx, n_ctx // 2, 0):
            out = sampler.window(cond, codes[:, start:], end - start, torch.Generator().manual_seed(seed * 1000 + start))
            codes = torch.cat([codes, out[:, codes.shape[1] - start:]], dim=1)
        synchronize(device_of(prior))
        return time.perf_counter() - t, codes

    out: dict = {"tokens": total, "windows": windows, "n_ctx": n_ctx, "threads": threads, "compiled": compiled}
    sampler = TokenSampler(prior, SamplingSettings(temperature=1.0), compile=compiled)
    _, *alone = window_seconds(sampler, 1, n_ctx, range(repeats + 1))  # the first compiles
    out["new_tokens_alone_s"] = statistics.median(alone) / n_ctx * total
    codes = {}
    for batched in (True, False):
        sampler.batched_prefill = batched
        times = []
        for seed in range(repeats):
            seconds, codes[batched] = level(sampler, seed)
            times.append(seconds)
        key = "prefill" if batched else "one_token"
        out[f"{key}_s"] = statistics.median(times)
        out[f"{key}_ratio"] = out[f"{key}_s"] / out["new_tokens_alone_s"]
    out["same_codes"] = bool(torch.equal(codes[True], codes[False]))
    return out


def level_table(result: dict, prior: Prior, threads: int, windows: int, compiled: bool) -> None:
    result["level"] = lv = time_level(prior, threads, windows, compiled=compiled)
    print(f"\na level of {lv['windows']} windows at hop 0.5 ({lv['tokens']:,} tokens), {'compiled' if compiled else 'eager'}, batch 1, "
          f"{lv['threads']} thread(s)")
    print(format_table(["known context fed", "level s", "vs its new tokens alone"],
                       [["new tokens alone", f"{lv['new_tokens_alone_s']:.2f}", "1.00x"],
                        ["one batched forward (prefill)", f"{lv['prefill_s']:.2f}", f"{lv['prefill_ratio']:.3f}x"],
                        ["one token at a time", f"{lv['one_token_s']:.2f}", f"{lv['one_token_ratio']:.3f}x"]]))
    print(f"same codes both ways: {lv['same_codes']}")


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
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="also time the compiled sampler")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--level-windows", type=int, default=4, help="windows of the level timed with and without the prefill (0: skip)")
    add_isa_argument(ap)
    add_pairs_argument(ap)
    add_device_argument(ap)
    args = ap.parse_args()
    use_isa(args.isa)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    prior = Prior(reference_config()).eval().to(device)
    runs = [time_tokens(prior, batch, threads, compiled, args.tokens)
            for batch in map(int, args.batches.split(",")) for compiled in (False, True)[:1 + args.compile] for threads in (1, 2)]
    result: dict = {"reference": {"n_ctx": 2048, "width": 256, "depth": 8, "heads": 2, "block_len": 64, "bins": 2048},
                    "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "tokens": runs, "device": device_facts(device)}
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

    if args.level_windows:
        level_table(result, prior, best1["threads"], args.level_windows, args.compile)
    if args.peer and args.pairs:
        sampler = TokenSampler(prior, SamplingSettings(temperature=1.0), compile=best1["compiled"])

        def ours() -> float:
            torch.set_num_threads(best1["threads"])
            return statistics.median(window_seconds(sampler, 1, args.tokens, range(3))) / args.tokens

        def theirs() -> float:
            report = peer(args.peer, "c_", "--no-flops", "--no-ceiling")
            return report["summary"]["c_prior_top_sample_kvcache"]["ms_per_token_median"] / 1000

        ours()  # the compile
        result["pairs"] = alternating_pairs(ours, theirs, args.pairs)
        print(pairs_line(f"batch 1 ({best1['threads']} thread(s), seconds per token)", result["pairs"]))
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
