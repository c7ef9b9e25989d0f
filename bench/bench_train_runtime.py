"""The training runtime for large models: per-rank memory and step time under ZeRO-0/2/3/3+offload,
and the time from job start to the first step.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_train_runtime.py [--params 5e8] [--only memory|startup]

1. Memory: a stack of pre-LayerNorm transformer blocks (width 2048, causal attention, MLP 4x)
   of at least --params parameters, 2 Ray Train workers x 1 thread on this machine, batch 1 x 32
   tokens, fp32, AdamW, 3 steps through the real runtime (checkpoint and streamed safetensors
   export included). Rank 0 reports what it holds of the model state (parameters, optimizer
   tensors, gradients) and its peak RSS; from the measured bytes per parameter and the rest of
   the peak taken as fixed, an upper bound on the largest model each stage could train here
   (on the CPU DeepSpeed's buffers grow with the model too: see the README for the fit of two sizes).
2. Start-up: the tiny bottom VQ-VAE through `python jobs/train_vqvae.py` (embedded Ray, 1
   worker): seconds from the job's start to the end of its first step, and where they go.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import save  # noqa: E402
from pipeline.tables import format_table  # noqa: E402
from pipeline.train.protocol import DataSource, TrainingTask  # noqa: E402

MEMORY_KEYS = ("mem_params_mb", "mem_optimizer_mb", "mem_grads_mb", "mem_rss_peak_mb")
STAGES = {"0": ("ZeRO-0", 0, False), "2": ("ZeRO-2", 2, False), "3": ("ZeRO-3", 3, False), "3o": ("ZeRO-3 + offload", 3, True)}
VOCAB, SEQ = 256, 32


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv, self.proj = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.fc1, self.fc2 = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, w))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class BlockStack(torch.nn.Module):
    def __init__(self, width: int, depth: int, heads: int):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm, self.head = torch.nn.LayerNorm(width), torch.nn.Linear(width, VOCAB)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


@dataclass
class RandomTokens(DataSource):
    def load_batch(self, step, micro, rank, world, size):
        return {"tokens": np.random.default_rng([step, micro, rank]).integers(0, VOCAB, (size, SEQ + 1), dtype=np.int64)}


@dataclass
class BlockStackTask(TrainingTask):
    width: int = 2048
    depth: int = 10
    heads: int = 16
    name = "blockstack"

    def build_model(self):
        return BlockStack(self.width, self.depth, self.heads)

    def run_step(self, model, batch, log):
        tokens = batch["tokens"]
        logits = model(tokens[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)), {}

    def card(self):
        return {"family": "blockstack", "width": self.width, "depth": self.depth}


UPSAMPLER_WINDOW = 256  # tokens per rank per step: the "short window" (the paper's: 8192)


@dataclass
class RandomUpsamplerCodes(DataSource):
    bins: int = 2048

    def load_batch(self, step, micro, rank, world, size):
        rng = np.random.default_rng([step, micro, rank])
        return {"codes": rng.integers(0, self.bins, (size, UPSAMPLER_WINDOW), dtype=np.int64),
                "upper_codes": rng.integers(0, self.bins, (size, UPSAMPLER_WINDOW // 4), dtype=np.int64),
                "artist": np.zeros(size, dtype=np.int64), "genres": np.zeros((size, 1), dtype=np.int64)}


@dataclass
class UpsamplerTask(TrainingTask):
    """The paper's middle upsampler (``models.prior_configs.PAPER``), all of it or its first ``depth`` layers."""

    depth: int = 72
    name = "upsampler"

    def config(self):
        import dataclasses

        from models.prior_configs import PAPER

        base = PAPER["middle"]
        return dataclasses.replace(base, transformer=dataclasses.replace(base.transformer, depth=self.depth))

    def build_model(self):
        from models.prior import Prior

        return Prior(self.config())

    def run_step(self, model, batch, log):
        return getattr(model, "module", model).loss_from(model(batch), batch)

    def card(self):
        import dataclasses

        return {"family": "prior", "config": dataclasses.asdict(self.config())}


def block_params(width: int) -> int:
    return 12 * width * width + 13 * width  # qkv, proj, fc1, fc2 with biases, two LayerNorms


def memory_run(work: Path, name: str, stage: int, offload: bool, task: TrainingTask, steps: int,
               source: DataSource | None = None) -> dict:
    import mlflow
    import ray.cloudpickle

    from pipeline.config import from_dict
    from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig
    from pipeline.train.protocol import Tracking, TrainSpec
    from pipeline.train.run import train_and_register

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import bench/
    db = f"sqlite:///{work / 'mlflow.db'}"
    rt = from_dict(RuntimeConfig, {"workers": 2, "cpus_per_worker": 1, "threads_per_worker": 1, "batch_size": 1, "zero_stage": stage,
                                   "offload": offload, "total_steps": steps, "log_every": 1, "data_cpus": 0.25})
    spec = TrainSpec(task, source or RandomTokens(), rt, from_dict(OptimConfig, {"lr": 1e-4, "warmup_steps": 1, "weight_decay": 0.01}),
                     from_dict(CheckpointConfig, {"every": steps, "storage": str(work / "runs"),
                                                  "run_name": f"mem-{stage}-{offload}-{time.time():.0f}"}),
                     Tracking(db, "bench-runtime"))
    started = time.time()
    try:
        summary = train_and_register(spec)
    except Exception as exc:  # noqa: BLE001 - a configuration that does not fit is a result, not the end of the bench
        shutil.rmtree(work / "runs", ignore_errors=True)
        reason = "out of memory (Ray's memory monitor killed the workers)" if "memory" in str(exc).lower() else str(exc)[:300]
        return {"config": name, "zero_stage": stage, "offload": offload, "failed": reason, "job_seconds": round(time.time() - started, 1)}
    client = mlflow.MlflowClient(tracking_uri=db)

    def series(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(summary["mlflow_run_id"], key), key=lambda m: m.step)]

    out = {"config": name, "zero_stage": stage, "offload": offload, "step_seconds": [round(v, 2) for v in series("step_s")],
           "job_seconds": round(time.time() - started, 1), "weights_files": summary["weights_files"],
           "weights_bytes": summary["weights_bytes"]}
    out.update({k: round(max(series(k)), 1) for k in MEMORY_KEYS})
    out["model_state_mb"] = round(out["mem_params_mb"] + out["mem_optimizer_mb"] + out["mem_grads_mb"], 1)
    shutil.rmtree(work / "runs", ignore_errors=True)  # several GB per configuration
    shutil.rmtree(work / "mlartifacts", ignore_errors=True)
    return out


def largest_model(run: dict, params: int, ram_gb: float, workers: int = 2) -> int:
    """Parameters each rank could hold on ``ram_gb`` shared by ``workers`` ranks, from what was measured:
    model state scales with the parameter count, the rest of the peak RSS is taken as fixed."""
    per_param = run["model_state_mb"] * 2 ** 20 / params
    fixed = (run["mem_rss_peak_mb"] - run["model_state_mb"]) * 2 ** 20
    return int((ram_gb * 2 ** 30 / workers - fixed) / per_param)


def startup_runs(work: Path, repeats: int, store: str) -> list[dict]:
    """``store``: "new" (every run makes its MLflow sqlite store: a first run on a machine) or
    "existing" (one store made beforehand, as every later run finds ./runs/mlflow.db)."""
    from bench.bench_vqvae_learning import real_shards

    shards = real_shards(work)
    runs = []
    if store == "existing":
        import mlflow

        shared = f"sqlite:///{work / f'startup-existing-{time.time():.0f}.db'}"
        mlflow.MlflowClient(tracking_uri=shared).search_experiments(max_results=1)  # its tables, before the timed runs
    for i in range(repeats):
        db = shared if store == "existing" else f"sqlite:///{work / f'startup-{i}-{time.time():.0f}.db'}"
        t0 = time.time()
        proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "train_vqvae.py"), "--level", "bottom", "--preset", "tiny",
                               "--shards", str(shards), "--runtime.workers", "1", "--runtime.total_steps", "3", "--runtime.log_every", "1",
                               "--checkpoint.every", "3", "--checkpoint.storage", str(work / "startup-runs"), "--mlflow_tracking_uri", db],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        import mlflow

        run_id = json.loads(proc.stdout[proc.stdout.index("{"):])["mlflow_run_id"]
        metrics = mlflow.MlflowClient(tracking_uri=db).get_run(run_id).data.metrics
        runs.append({"mlflow_store": store, **{k: round(v, 1) for k, v in metrics.items() if k.startswith("startup")},
                     "job_seconds": round(time.time() - t0, 1), "traceback_on_console": "Traceback" in proc.stdout + proc.stderr})
        print(runs[-1], flush=True)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=5e8, help="at least this many parameters")
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", choices=("memory", "startup"), default=None)
    ap.add_argument("--stages", default="0,2,3,3o", help="which of 0, 2, 3, 3o (3 + offload)")
    ap.add_argument("--tag", default="", help="suffix of the sitting's variant in bench/results/train_runtime.json")
    ap.add_argument("--one-stage", default="", help=argparse.SUPPRESS)  # internal: one configuration in this process
    ap.add_argument("--startup-repeats", type=int, default=3)
    ap.add_argument("--model", choices=("blockstack", "upsampler"), default="blockstack",
                    help="memory runs: a stack of transformer blocks, or the paper's middle upsampler (models/)")
    ap.add_argument("--upsampler-depth", type=int, default=72, help="layers of the upsampler (the paper's: 72)")
    ap.add_argument("--ram-gb", type=float, default=22.0, help="memory the two ranks may use together (this machine: 24 GB)")
    ap.add_argument("--work", default="")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-runtime-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GB"}
    if args.only in (None, "startup"):
        for store in ("new", "existing"):
            runs = startup_runs(work, args.startup_repeats, store)
            result.setdefault("startup", []).extend(runs)
            result[f"startup_median_first_step_s_{store}_store"] = statistics.median(r["startup_s"] for r in runs)
    if args.only in (None, "memory"):
        if args.one_stage:
            from pipeline.services import init_ray

            init_ray(None, 4, progress=False)
        if args.model == "upsampler":
            task, source = UpsamplerTask(args.upsampler_depth), RandomUpsamplerCodes()
            with torch.device("meta"):
                params = sum(p.numel() for p in task.build_model().parameters())
            described = (f"the paper's middle upsampler, {args.upsampler_depth} of its 72 layers ({params / 981_298_176:.0%} of "
                         f"981,298,176 parameters), windows of {UPSAMPLER_WINDOW} tokens x 1 per rank")
        else:
            depth = math.ceil(args.params / block_params(args.width))
            task, source = BlockStackTask(args.width, depth, 16), RandomTokens()
            params = sum(p.numel() for p in BlockStack(args.width, 1, 16).parameters()) + (depth - 1) * block_params(args.width)
            described = f"{depth} blocks of width {args.width}, 16 heads, {SEQ} tokens x 1 per rank"
        if args.one_stage:
            print("RESULT " + json.dumps(memory_run(work, *STAGES[args.one_stage], task, args.steps, source)), flush=True)
            return
        runs = []
        for key in args.stages.split(","):
            # each configuration in a fresh process (and embedded Ray): a run that ran out of memory can leave
            # worker processes behind in its Ray session, which would starve the next configuration
            proc = subprocess.run([sys.executable, __file__, "--only", "memory", "--one-stage", key, "--params", str(args.params),
                                   "--width", str(args.width), "--steps", str(args.steps), "--work", str(work),
                                   "--model", args.model, "--upsampler-depth", str(args.upsampler_depth)],
                                  capture_output=True, text=True, cwd=ROOT)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            runs.append(json.loads(lines[-1][7:]) if lines else {"config": STAGES[key][0], "zero_stage": STAGES[key][1],
                                                                 "offload": STAGES[key][2], "failed": proc.stderr[-300:]})
            print(runs[-1], flush=True)
        done = [r for r in runs if "failed" not in r]
        for r in done:
            r["bytes_per_param"] = round(r["model_state_mb"] * 2 ** 20 / params, 2)
            r["largest_model_params_here"] = largest_model(r, params, args.ram_gb)
        print(format_table(["config", "params MB", "optimizer MB", "grads MB", "model state MB", "B/param", "peak RSS MB",
                            "step s (last)", "largest model here"],
                           [[r["config"], r["mem_params_mb"], r["mem_optimizer_mb"], r["mem_grads_mb"], r["model_state_mb"],
                             r["bytes_per_param"], r["mem_rss_peak_mb"], r["step_seconds"][-1],
                             f"{r['largest_model_params_here'] / 1e9:.2f} B"] for r in done]
                           + [[r["config"], "failed: " + r["failed"][:60], "", "", "", "", "", "", ""] for r in runs if "failed" in r]))
        result.update(memory=runs, params=params, model=described)
    # --only startup keeps its own file: the memory table of a full run stays
    print(save("train_runtime", result, f"{'startup' if args.only == 'startup' else 'memory'}{args.tag}"))


if __name__ == "__main__":
    main()
