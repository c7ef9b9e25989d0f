"""The training runtime: per-worker memory under ZeRO-0/2/3, and data loading against consumption.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_train_runtime.py [--steps 6]

1. ZeRO: the paper's bottom VQ-VAE (width 64, depth 8), 2 workers x 1 thread, batch 2 x 65,536
   per worker, fp32, through the real job. Rank 0 reports what it holds of the model state
   (parameters, optimizer tensors, gradients) and its peak RSS.
2. Data: one rank's Ray Data stream alone (windows/s, no training), against what training
   consumes (windows per worker per step / step time), and the time training waited.
Uses the three shared real songs (preprocessed once into --work).
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

from bench.bench_vqvae_learning import real_shards  # noqa: E402
from bench.common import save  # noqa: E402
from pipeline.preprocess.report import format_table  # noqa: E402

MEMORY_KEYS = ("mem_params_mb", "mem_optimizer_mb", "mem_grads_mb", "mem_rss_peak_mb")


def zero_run(shards: Path, work: Path, stage: int, steps: int) -> dict:
    import mlflow

    from pipeline.config import from_dict
    from pipeline.train.vqvae_job import TrainVQVAEConfig, train_vqvae

    db = f"sqlite:///{work / 'mlflow.db'}"
    cfg = from_dict(TrainVQVAEConfig, {
        "level": "bottom", "shards": str(shards), "sample_length": 65536, "mlflow_tracking_uri": db, "experiment": "bench-runtime",
        "register": "bench-vqvae-bottom", "num_cpus": 4,
        "runtime": {"workers": 2, "cpus_per_worker": 1, "threads_per_worker": 1, "batch_size": 2, "zero_stage": stage,
                    "total_steps": steps, "checkpoint_every": steps, "log_every": 1, "warmup_steps": 1,
                    "storage": str(work / "runs")}})
    summary = train_vqvae(cfg)
    client = mlflow.MlflowClient(tracking_uri=db)

    def series(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(summary["mlflow_run_id"], key), key=lambda m: m.step)]

    step_s = series("step_s")[1:]  # the first step waits for the data actors to start
    out = {"zero_stage": stage, "step_seconds_median": round(statistics.median(step_s), 3),
           "data_wait_seconds_after_first_step": round(sum(series("data_wait_s")[1:]), 3),
           "first_step_data_wait_seconds": round(series("data_wait_s")[0], 2), "job_seconds": summary["wall_seconds"]}
    out.update({k: round(max(series(k)), 2) for k in MEMORY_KEYS})
    return out


def loader_throughput(shards: Path, micro_batches: int) -> dict:
    from models.vqvae import PAPER
    from pipeline.runtime import init_ray
    from pipeline.train.runtime import RuntimeConfig, rank_datasets
    from pipeline.train.vqvae_task import VQVAETask, estimate_loss_scales
    from pipeline.train.windows import WindowSampler

    init_ray(None, 4, progress=False)
    task = VQVAETask(PAPER["bottom"], str(shards), 65536, estimate_loss_scales(WindowSampler(shards, 65536), PAPER["bottom"]))
    cfg = RuntimeConfig(workers=2, batch_size=2, total_steps=micro_batches)
    stream = rank_datasets(task, cfg, 0)["rank0"]
    t0 = time.perf_counter()
    first = None
    n = 0
    for batch in stream.iter_batches(batch_size=2, prefetch_batches=4):
        n += len(batch["audio"])
        first = first or time.perf_counter() - t0
    wall = time.perf_counter() - t0
    steady = (n - 2) / (wall - first)
    return {"windows": n, "first_batch_seconds": round(first, 2), "windows_per_second_steady": round(steady, 1),
            "audio_seconds_per_second": round(steady * 65536 / 44100, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--micro-batches", type=int, default=200)
    ap.add_argument("--work", default="")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-runtime-"))
    work.mkdir(parents=True, exist_ok=True)
    shards = real_shards(work)
    loader = loader_throughput(shards, args.micro_batches)
    runs = [zero_run(shards, work, stage, args.steps) for stage in (0, 2, 3)]
    print(format_table(["ZeRO", "params MB", "optimizer MB", "grads MB", "peak RSS MB", "step s", "data wait s (steps 2+)"],
                       [[r["zero_stage"], r["mem_params_mb"], r["mem_optimizer_mb"], r["mem_grads_mb"], r["mem_rss_peak_mb"],
                         r["step_seconds_median"], r["data_wait_seconds_after_first_step"]] for r in runs]))
    consumed = 2 / min(r["step_seconds_median"] for r in runs)  # windows per second one worker trains on, at best
    print(f"data: one rank's stream gives {loader['windows_per_second_steady']} windows/s "
          f"({loader['audio_seconds_per_second']} s of audio/s); training consumes {consumed:.2f} windows/s per worker "
          f"-> {loader['windows_per_second_steady'] / consumed:.0f}x headroom")
    print(save("train_runtime", {"zero": runs, "loader": loader, "consumed_windows_per_second_per_worker": round(consumed, 3),
                                 "config": "paper bottom VQ-VAE, 2 workers x 1 thread, batch 2 x 65536 per worker, fp32"}))


if __name__ == "__main__":
    main()
