"""The one training runtime: Ray Train workers each running a DeepSpeed engine.

A model family plugs in as a ``TrainingTask`` (audiocraft's solver shape): it builds the
model, loads the micro-batch of (step, micro-step, rank) and computes the loss of a batch.
This file owns everything else, once: the data stream (Ray Data, one dataset per rank),
DeepSpeed (ZeRO 0-3, offload, precision, accumulation, clipping, LR warm-up then linear
decay to 0, optional EMA of the weights), checkpoints through ``ray.train.report``,
restarts (``FailureConfig``) and resuming, MLflow logging from rank 0, and at the end the
consolidation of the ZeRO shards and the registration of the model with its card.

Determinism: the batch of a step and the random state used inside it are functions of
(seed, step, micro-step, rank) alone, so a run resumed from a checkpoint continues exactly
where the uninterrupted run would be; the data position is the step count itself.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline.config import ConfigError, field

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "deepspeed"
PROGRESS_FILE = "progress.json"  # in every checkpoint: the step it holds (the driver reads it to resume a run)
EMA_FILE = "ema.pt"


@dataclass
class RuntimeConfig:
    workers: int = field(1, "Ray Train workers (processes); each runs one DeepSpeed rank")
    cpus_per_worker: float = field(1.0, "CPUs Ray reserves per worker")
    threads_per_worker: int = field(1, "torch threads inside each worker")
    use_gpu: bool = field(False, "one GPU per worker")
    zero_stage: int = field(2, "DeepSpeed ZeRO stage 0-3 (infra/deepspeed/zero<N>.json)")
    offload: bool = field(False, "ZeRO-Offload of optimizer state to CPU (stage >= 1)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field("auto", "auto: bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU")
    batch_size: int = field(2, "examples per worker per micro-step")
    grad_accum: int = field(1, "micro-steps per optimizer step")
    grad_clip: float = field(1.0, "gradient norm clip (0 = off)")
    lr: float = field(3e-4, "peak learning rate (Adam)")
    warmup_steps: int = field(100, "linear warm-up, then linear decay to 0 at total_steps")
    total_steps: int = field(1000, "optimizer steps")
    ema_decay: float = field(0.0, "EMA of the weights (0 = off; e.g. 0.999); the EMA weights are the ones registered")
    checkpoint_every: int = field(200, "steps between checkpoints (and at the end)")
    log_every: int = field(10, "steps between metric logs (one batched MLflow call each)")
    media_every: int = field(0, "steps between audio/image logs (0 = at the end only)")
    data_cpus: float = field(0.5, "CPUs of each rank's data-loading actor (Ray Data)")
    prefetch_batches: int = field(4, "micro-batches each rank's iterator loads ahead")
    seed: int = field(0, "everything random is a function of (seed, step, rank)")
    max_failures: int = field(1, "worker-group restarts from the last checkpoint")
    storage: str = field("runs/train", "where Ray Train keeps checkpoints (made absolute)")
    run_name: str = field("", "Ray Train run name; reusing one resumes it (default: <task>-<time>)")
    fail_at_step: int = field(0, "fault injection for tests: rank 0 raises once at this step (0 = never)")

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"runtime.zero_stage must be 0-3, got {self.zero_stage}")
        if self.offload and self.zero_stage == 0:
            raise ConfigError("runtime.offload needs ZeRO stage >= 1")
        if self.ema_decay and self.zero_stage == 3:
            # ZeRO-3 partitions the weights: an EMA would gather every parameter every step
            raise ConfigError("runtime.ema_decay needs ZeRO stage <= 2 (stage 3 keeps no full copy of the weights)")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"runtime.ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("workers", "batch_size", "grad_accum", "total_steps", "checkpoint_every", "log_every", "prefetch_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"runtime.{name} must be >= 1")


class TrainingTask(ABC):
    """What a model family writes; picklable (it travels to the workers and the data actors)."""

    name = "task"

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    def open_data(self) -> None:
        """Open readers (once per data actor, and once per worker for ``media``)."""

    @abstractmethod
    def load_batch(self, step: int, micro: int, rank: int, world: int, size: int) -> dict[str, np.ndarray]:
        """This rank's micro-batch of (step, micro): arrays with ``size`` rows; a pure function of the arguments."""

    @abstractmethod
    def run_step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (to backpropagate) and scalar metrics of one micro-batch."""

    def media(self, model: torch.nn.Module, folder: Path | None) -> dict[str, float]:
        """Every rank, in eval mode without gradients (ZeRO-3 forward passes are collective). Rank 0
        gets a ``folder`` to write audio/images into (logged under ``media/step_N``). Returns metrics."""
        return {}

    def card(self) -> dict[str, Any]:
        """The model card: what a registered version carries (config, rates, lineage)."""
        return {}

    def params(self) -> dict[str, Any]:
        """Flat parameters for MLflow."""
        return {}


@dataclass
class Tracking:
    """Where the run is logged and the model registered."""

    uri: str = ""
    experiment: str = "jukebox-train"
    register: str = ""  # registered model name ("" = do not register)
    alias: str = "current"


# ---------------------------------------------------------------- data

class MicroBatchLoader:
    """Ray Data actor: one input row (a micro-batch index) -> that micro-batch's rows."""

    def __init__(self, task: TrainingTask, rank: int, world: int, size: int, grad_accum: int, start: int):
        torch.set_num_threads(1)
        self.task, self.rank, self.world, self.size, self.grad_accum, self.start = task, rank, world, size, grad_accum, start
        task.open_data()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = int(rows["id"][0])
        step, micro = self.start + index // self.grad_accum, index % self.grad_accum
        out = dict(self.task.load_batch(step, micro, self.rank, self.world, self.size))
        out["_step"] = np.full(self.size, step, dtype=np.int64)
        out["_micro"] = np.full(self.size, micro, dtype=np.int64)
        return out


def rank_datasets(task: TrainingTask, cfg: RuntimeConfig, start: int) -> dict:
    """One ordered Ray Data stream per rank, from ``start`` to the end of training.

    Why not one dataset split by Ray Train: ``streaming_split`` hands blocks to whichever
    worker asks first, so which examples a rank gets would vary between runs and a resumed
    run could not equal an uninterrupted one. Per-rank streams with ``preserve_order`` are
    exact, and the loading still runs in Ray Data actors beside the training processes.
    """
    import ray.data

    n = (cfg.total_steps - start) * cfg.grad_accum
    return {f"rank{r}": ray.data.range(n, override_num_blocks=max(1, min(n, 64))).map_batches(
        MicroBatchLoader, fn_constructor_kwargs=dict(task=task, rank=r, world=cfg.workers, size=cfg.batch_size,
                                                     grad_accum=cfg.grad_accum, start=start),
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=cfg.data_cpus) for r in range(cfg.workers)}


# ---------------------------------------------------------------- workers

def deepspeed_config(cfg: RuntimeConfig, world: int, device: str) -> dict:
    ds = json.loads((DEEPSPEED_CONFIGS / f"zero{cfg.zero_stage}.json").read_text())
    ds.update(train_micro_batch_size_per_gpu=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
              train_batch_size=cfg.batch_size * cfg.grad_accum * world, gradient_clipping=cfg.grad_clip,
              steps_per_print=10 ** 9, zero_allow_untested_optimizer=True)
    precision = resolve_precision(cfg.precision, device)
    ds["bf16"] = {"enabled": precision == "bf16"}
    ds["fp16"] = {"enabled": precision == "fp16"}
    if cfg.offload:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    ds["scheduler"] = {"type": "WarmupDecayLR", "params": {
        "warmup_min_lr": 0.0, "warmup_max_lr": cfg.lr, "warmup_num_steps": max(1, min(cfg.warmup_steps, cfg.total_steps - 1)),
        "total_num_steps": cfg.total_steps, "warmup_type": "linear"}}
    return ds


def resolve_precision(precision: str, device: str) -> str:
    if precision != "auto":
        return precision
    return "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def _seed(cfg: RuntimeConfig, step: int, rank: int) -> None:
    torch.manual_seed(hash((cfg.seed, step, rank)) % 2 ** 63)


class WeightEMA:
    """fp32 exponential moving average of the trainable weights (ZeRO <= 2: every rank holds them all)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1 - self.decay)


class _RankZeroLog:
    """Rank 0's MLflow: metrics buffered and sent in one ``log_batch`` per interval."""

    def __init__(self, tracking: Tracking, run_id: str):
        import mlflow

        self.client, self.run_id, self.pending = mlflow.MlflowClient(tracking_uri=tracking.uri), run_id, []

    def add(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items() if np.isfinite(v)]

    def flush(self) -> None:
        for i in range(0, len(self.pending), 1000):  # MLflow's per-call limit
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending = []

    def artifacts(self, folder: Path, path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), path)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def rank_memory(engine) -> dict[str, float]:
    """What this rank holds of the model state (MB) and its peak resident memory.

    Parameters as stored on this rank (ZeRO-3 keeps a 1/world partition, ``ds_tensor``), the
    optimizer's own tensors (Adam moments; ZeRO-1/2 also their fp32 partition of the weights)
    and the gradients kept between steps. Activations are not model state: they show in the
    peak RSS, with the process's libraries (~0.5 GB of torch/DeepSpeed/Ray on CPU)."""
    import resource

    params = [getattr(p, "ds_tensor", p) for p in engine.module.parameters()]
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    state = [t for st in inner.state.values() for t in st.values()]
    opt_params = [p for g in inner.param_groups for p in g["params"]]
    own = {id(p) for p in engine.module.parameters()}
    copies = [p for p in opt_params if id(p) not in own]  # ZeRO-1/2: the optimizer's fp32 partitions
    grads = [p.grad for p in opt_params if p.grad is not None] + [p.grad for p in engine.module.parameters() if p.grad is not None]
    kept = getattr(engine.optimizer, "averaged_gradients", None) or {}  # ZeRO-2/3: this rank's reduced gradient partition
    grads += [t for v in (kept.values() if isinstance(kept, dict) else kept) for t in (v if isinstance(v, list) else [v])]
    grads = list({id(g): g for g in grads}.values())  # ZeRO-0: the optimizer's parameters are the module's
    mb = 2 ** 20
    return {"mem_params_mb": _tensor_bytes(params) / mb, "mem_optimizer_mb": (_tensor_bytes(state) + _tensor_bytes(copies)) / mb,
            "mem_grads_mb": _tensor_bytes(grads) / mb, "mem_rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _media(task: TrainingTask, engine, rank: int, step: int, log: _RankZeroLog | None) -> dict[str, float]:
    engine.eval()
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        metrics = task.media(engine, Path(tmp) if rank == 0 else None)
        if log is not None and any(Path(tmp).iterdir()):
            log.artifacts(Path(tmp), f"media/step_{step:07d}")
    engine.train()
    return {f"eval_{k}": v for k, v in metrics.items()}


def train_loop(config: dict) -> None:
    """Runs in every Ray Train worker."""
    import deepspeed
    import ray.train

    task: TrainingTask = config["task"]
    cfg: RuntimeConfig = config["runtime"]
    data_start: int = config["data_start"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads_per_worker)
    device = "cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"
    task.open_data()
    _seed(cfg, -1, 0)  # same initial weights on every rank
    model = task.build_model()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    ds_config = deepspeed_config(cfg, world, device)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float16 if ds_config["fp16"]["enabled"] else torch.float32
    ema = WeightEMA(engine.module, cfg.ema_decay) if cfg.ema_decay else None
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            _, client = engine.load_checkpoint(folder, tag="state")
            if ema is not None:
                ema.shadow = torch.load(Path(folder) / EMA_FILE, weights_only=True)
        start = int(client["step"])
    log = _RankZeroLog(config["tracking"], config["mlflow_run_id"]) if rank == 0 and config["mlflow_run_id"] else None
    stream = iter(ray.train.get_dataset_shard(f"rank{rank}").iter_torch_batches(
        batch_size=cfg.batch_size, prefetch_batches=cfg.prefetch_batches, device="cpu"))
    for _ in range((start - data_start) * cfg.grad_accum):  # a restart inside this job replays its stream from data_start
        next(stream)
    media_every = cfg.media_every or cfg.total_steps
    for step in range(start, cfg.total_steps):
        t0 = time.perf_counter()
        metrics: dict[str, float] = {"data_wait_s": 0.0}
        for micro in range(cfg.grad_accum):
            t_data = time.perf_counter()
            batch = next(stream)
            metrics["data_wait_s"] += time.perf_counter() - t_data
            got = (int(batch.pop("_step")[0]), int(batch.pop("_micro")[0]))
            if got != (step, micro):  # the stream must be exactly the run's, or resuming would not be exact
                raise RuntimeError(f"rank {rank}: data stream at {got}, training at {(step, micro)}")
            batch = {k: v.to(engine.device, dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()}
            _seed(cfg, step * cfg.grad_accum + micro, rank)
            loss, parts = task.run_step(engine, batch)
            engine.backward(loss)
            if micro == cfg.grad_accum - 1:  # gradients exist now, not after the step
                memory = rank_memory(engine)
            engine.step()
            for k, v in parts.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / cfg.grad_accum
        if ema is not None:
            ema.update(engine.module)
        if cfg.fail_at_step and step + 1 == cfg.fail_at_step and start == 0 and rank == 0:
            raise RuntimeError(f"injected failure at step {step + 1} (runtime.fail_at_step)")
        metrics.update(lr=engine.get_lr()[0], step_s=time.perf_counter() - t0)
        metrics.update(memory)
        metrics["data_wait_frac"] = metrics["data_wait_s"] / metrics["step_s"]
        done = step + 1
        if done % media_every == 0 or done == cfg.total_steps:
            metrics.update(_media(task, engine, rank, done, log))
        if log is not None:
            log.add(done, metrics)
        if done % cfg.checkpoint_every == 0 or done == cfg.total_steps:
            if log is not None:
                log.flush()
            with tempfile.TemporaryDirectory() as tmp:
                engine.save_checkpoint(tmp, tag="state", client_state={"step": done})
                if rank == 0:  # Ray merges every rank's files into one checkpoint folder
                    (Path(tmp) / PROGRESS_FILE).write_text(json.dumps({"step": done}))
                    if ema is not None:
                        torch.save(ema.shadow, Path(tmp) / EMA_FILE)
                ray.train.report({**metrics, "step": done}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        elif done % cfg.log_every == 0:
            if log is not None:
                log.flush()
            ray.train.report({**metrics, "step": done})


# ---------------------------------------------------------------- driver

def latest_checkpoint(run_dir: Path) -> tuple[int, Path | None]:
    """(step, folder) of the newest checkpoint of a Ray Train run folder; (0, None) if none."""
    found = [(json.loads(p.read_text())["step"], p.parent) for p in run_dir.glob(f"checkpoint_*/{PROGRESS_FILE}")]
    return max(found, default=(0, None), key=lambda f: f[0])


def checkpointed_step(run_dir: Path) -> int:
    return latest_checkpoint(run_dir)[0]


def fit(task: TrainingTask, cfg: RuntimeConfig, tracking: Tracking | None = None, mlflow_run_id: str = ""):
    """Train ``task`` with Ray Train; returns the ``ray.train.Result`` (its checkpoint holds the ZeRO state)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg.validate()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cfg.use_gpu else "cpu")
    name = cfg.run_name or f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = Path(cfg.storage).expanduser().resolve()
    start = checkpointed_step(storage / name)  # a new job pointed at an existing run resumes it
    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    trainer = TorchTrainer(
        train_loop, train_loop_config={"task": task, "runtime": cfg, "data_start": start,
                                       "tracking": tracking or Tracking(), "mlflow_run_id": mlflow_run_id},
        datasets=rank_datasets(task, cfg, start),
        dataset_config=DataConfig(datasets_to_split=[], execution_options=options),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    return trainer.fit()


def consolidated_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """fp32 weights from a ZeRO checkpoint (any stage), on the CPU, without a process group.

    With an EMA, its weights replace the trained ones (buffers such as the codebook stay)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if not list((Path(checkpoint_dir) / "state").glob("*optim_states.pt")):  # ZeRO-0: rank 0 saved the whole module
        saved = torch.load(Path(checkpoint_dir) / "state" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        state = {k: v.float() if v.is_floating_point() else v for k, v in saved["module"].items()}
    else:
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag="state")
    ema = Path(checkpoint_dir) / EMA_FILE
    if ema.exists():
        state.update(torch.load(ema, weights_only=True))
    return state
