"""The one training runtime: Ray Train workers each running a DeepSpeed engine.

A model family writes two things (architecture.md, "a training job"):

- a ``DataSource``, which runs in the loader actors: it reads shards or code caches and
  returns the micro-batch of (step, micro-step, rank). It never holds a model, so nothing
  heavy travels to the data actors.
- a ``TrainingTask``, which runs in the workers: ``setup()`` once per worker (load a frozen
  VQ-VAE from the registry, say), ``build_model()`` (under ``deepspeed.zero.Init`` at ZeRO-3,
  so no rank ever holds the whole model), and ``run_step()``: the loss and metrics of a
  batch, as tensors.

This file owns the rest, once: the data streams (Ray Data, one per rank, started at the
step the run resumes from), DeepSpeed (ZeRO 0-3, offload with DeepSpeed's CPU Adam,
precision, accumulation), AdamW with parameter groups and the schedule
(``pipeline/train/config.py``), an EMA of the weights partitioned like ZeRO-3
(``weights.py``), checkpoints through ``ray.train.report`` and resuming from the one Ray
restores, metrics that stay on the device until a log step, a stop on a non-finite loss,
and rank 0's MLflow logging that an outage does not stop (``metrics_sink.py``).

Determinism: the batch of a step and the random state used inside it are functions of
(seed, step, micro-step, rank) alone, so a run resumed from a checkpoint continues exactly
where the uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig
from pipeline.train.sources import DataSource, RankStream  # noqa: F401 (DataSource: re-exported for tasks)
from pipeline.train.weights import PartitionedEMA, weights_only_loads

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "deepspeed"
PROGRESS_FILE = "progress.json"  # rank 0's note in every checkpoint: its step
NO_DECAY_MODULES = (torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm,
                    torch.nn.modules.batchnorm._BatchNorm)


class TrainingTask(ABC):
    """What the workers run."""

    name = "task"

    def setup(self, device: torch.device) -> None:
        """Once per worker, before ``build_model``: load frozen models, open evaluation data."""

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    @abstractmethod
    def run_step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], log: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (to backpropagate) and metrics of one micro-batch, as tensors (they stay on the device).

        ``log`` is true on steps whose metrics are logged: compute costly extras only then."""

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


@dataclass
class TrainSpec:
    """Everything a worker needs, shipped once with the train loop's config."""

    task: TrainingTask
    source: DataSource
    runtime: RuntimeConfig
    optim: OptimConfig
    checkpoint: CheckpointConfig
    tracking: Tracking
    mlflow_run_id: str = ""
    job_started: float = 0.0  # time.time() when the job started, for the start-up metric
    outcome: Any = None  # a RunOutcome actor: what the workers tell the driver beyond the checkpoint


class RunOutcome:
    """A tiny actor the workers tell what ``Result`` cannot carry (it holds only the last
    checkpoint's metrics): a non-finite loss (step, ranks), and what MLflow did not receive."""

    def __init__(self):
        self.facts: dict[str, Any] = {}

    def record(self, facts: dict[str, Any]) -> None:
        self.facts.update(facts)

    def get(self) -> dict[str, Any]:
        return self.facts


# ---------------------------------------------------------------- optimiser

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


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A batch array from the object store (read-only there) as a tensor."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _seed(cfg: RuntimeConfig, step: int, rank: int) -> None:
    torch.manual_seed(hash((cfg.seed, step, rank)) % 2 ** 63)


# ---------------------------------------------------------------- metrics

class MetricAccumulator:
    """Sums of each metric since the last log, on the device: no host sync between logs.

    At a log step the sums of every rank are reduced in one collective and divided by
    their counts: the logged value is the mean over ranks, steps and micro-steps.
    """

    def __init__(self, device: torch.device):
        self.device, self.sums, self.counts = device, {}, {}
        self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float().reshape(())
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def watch_loss(self, loss: torch.Tensor, step: int) -> None:
        """Remember the first step whose loss was NaN or infinite, without leaving the device."""
        bad = ~torch.isfinite(loss.detach()) & (self.first_nonfinite < 0)
        self.first_nonfinite = torch.where(bad, torch.full_like(self.first_nonfinite, step), self.first_nonfinite)

    def nonfinite(self, world: int) -> dict[int, int]:
        """{rank: first bad step} over all ranks (a collective: every rank calls it at the same steps)."""
        import torch.distributed as dist

        if world == 1:
            gathered = [self.first_nonfinite]
        else:
            gathered = [torch.empty_like(self.first_nonfinite) for _ in range(world)]
            dist.all_gather(gathered, self.first_nonfinite)
        return {r: int(s) for r, s in enumerate(gathered) if int(s) >= 0}

    def reduce(self, world: int) -> dict[str, float]:
        import torch.distributed as dist

        keys = sorted(self.sums)
        if not keys:
            return {}
        packed = torch.stack([self.sums[k] / self.counts[k] for k in keys])
        if world > 1:
            dist.all_reduce(packed)
            packed /= world
        values = packed.tolist()
        self.sums, self.counts = {}, {}
        return dict(zip(keys, values))


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def rank_memory(engine) -> dict[str, float]:
    """What this rank holds of the model state (MB) and its peak resident memory (a log-step extra).

    Parameters as stored on this rank (ZeRO-3 keeps a 1/world partition, ``ds_tensor``), the
    optimizer's own tensors (Adam moments; ZeRO-1/2 also their fp32 partition of the weights)
    and the gradients kept between steps."""
    import resource

    params = [getattr(p, "ds_tensor", p) for p in engine.module.parameters()]
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    state = [t for st in inner.state.values() for t in st.values()]
    opt_params = [p for g in inner.param_groups for p in g["params"]]
    own = {id(p) for p in engine.module.parameters()}
    copies = [p for p in opt_params if id(p) not in own]  # ZeRO-1/2/3: the optimizer's fp32 partitions
    grads = [p.grad for p in opt_params if p.grad is not None] + [p.grad for p in engine.module.parameters() if p.grad is not None]
    kept = getattr(engine.optimizer, "averaged_gradients", None) or {}  # ZeRO-2/3: this rank's reduced gradient partition
    grads += [t for v in (kept.values() if isinstance(kept, dict) else kept) for t in (v if isinstance(v, list) else [v])]
    grads = list({id(g): g for g in grads}.values())
    mb = 2 ** 20
    return {"mem_params_mb": _tensor_bytes(params) / mb, "mem_optimizer_mb": (_tensor_bytes(state) + _tensor_bytes(copies)) / mb,
            "mem_grads_mb": _tensor_bytes(grads) / mb, "mem_rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _media(task: TrainingTask, engine, rank: int, step: int, sink) -> dict[str, float]:
    engine.eval()
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        metrics = task.media(engine, Path(tmp) if rank == 0 else None)
        if sink is not None and any(Path(tmp).iterdir()):
            sink.artifacts(Path(tmp), f"media/step_{step:07d}")
    engine.train()
    return {f"eval_{k}": v for k, v in metrics.items()}


# ---------------------------------------------------------------- the worker

def build_engine(spec: TrainSpec, world: int, device: str):
    from pipeline.services import use_venv_torch_extensions

    use_venv_torch_extensions()  # before DeepSpeed loads an op (a worker on a cluster node too)
    import deepspeed

    cfg = spec.runtime
    ds_config = deepspeed_config(cfg, spec.optim, world, device)
    _seed(cfg, -1, 0)  # the same initial weights on every rank
    deepspeed.init_distributed()  # adopts the process group Ray Train made
    partitioned = deepspeed.zero.Init(config_dict_or_path=ds_config) if cfg.zero_stage == 3 else contextlib.nullcontext()
    with partitioned:
        model = spec.task.build_model()  # ZeRO-3: each module's parameters are partitioned as it is built
    if cfg.compile:
        model.compile()  # in place: the state dict keeps its names, so checkpoints and the registry do not change
    optimizer = build_optimizer(model, spec.optim, cfg.offload, device)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float16 if ds_config["fp16"]["enabled"] else torch.float32
    return engine, dtype


def _checkpoint_score(step: int, ckpt: CheckpointConfig) -> float:
    """Ray keeps the highest-scoring checkpoints: milestones outrank every other, the newest come next."""
    return step + (1e12 if ckpt.milestone_every and step % ckpt.milestone_every == 0 else 0)


def read_progress(folder: Path, total_steps: int) -> int:
    """The step a restored checkpoint holds; anything else than a step in [0, total_steps] is refused
    (a step past the end would skip training and register whatever the folder holds)."""
    try:
        step = json.loads((folder / PROGRESS_FILE).read_text())["step"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RuntimeError(f"checkpoint {folder}: unreadable {PROGRESS_FILE} ({exc})") from None
    if type(step) is not int or not 0 <= step <= total_steps:
        raise RuntimeError(f"checkpoint {folder}: step {step!r} is not one of this run's (0..{total_steps})")
    return step


def train_loop(config: dict) -> None:
    """Runs in every Ray Train worker."""
    import ray.train

    spec: TrainSpec = config["spec"]
    cfg, task = spec.runtime, spec.task
    since_job = (lambda: time.time() - spec.job_started) if spec.job_started else (lambda: 0.0)
    startup = {"startup_worker_s": since_job()}  # where the time to the first step goes (logged once)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads_per_worker)
    device = "cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"
    restored = contextlib.ExitStack()
    checkpoint = ray.train.get_checkpoint()  # the one Ray restores: after a worker-group restart, or a resumed run
    folder = Path(restored.enter_context(checkpoint.as_directory())) if checkpoint else None
    start = read_progress(folder, cfg.total_steps) if folder else 0
    # the loader actor starts now, in its own process, and loads while the engine is built
    stream = RankStream(spec.source, cfg, rank, world, start) if start < cfg.total_steps else iter(())
    task.setup(torch.device(device))
    engine, dtype = build_engine(spec, world, device)
    startup["startup_engine_s"] = since_job()
    ema = PartitionedEMA(engine.module, cfg.ema_decay, rank, world) if cfg.ema_decay else None
    if folder:
        with weights_only_loads():  # DeepSpeed asks torch.load for weights_only=False
            _, client = engine.load_checkpoint(str(folder), tag="state")
        if int(client["step"]) != start:
            raise RuntimeError(f"checkpoint {checkpoint.path}: DeepSpeed state at step {client['step']}, progress at {start}")
        if ema is not None:
            ema.load(folder)
    restored.close()
    sink = None
    if rank == 0 and spec.mlflow_run_id:
        from pipeline.train.metrics_sink import MetricsSink

        sink = MetricsSink(spec.tracking.uri, spec.mlflow_run_id)
    finished = False
    try:
        _train_steps(spec, engine, dtype, ema, stream, start, rank, world, sink, startup, since_job)
        finished = True
    finally:
        if sink is not None:  # deliver what is queued (after an error too, briefly), within a bound
            ray.get(spec.outcome.record.remote(sink.close(timeout=120 if finished else 10)))


def _train_steps(spec: TrainSpec, engine, dtype, ema, stream, start: int, rank: int, world: int, sink, startup: dict,
                 since_job) -> None:
    import ray.train

    cfg, task = spec.runtime, spec.task
    acc = MetricAccumulator(engine.device)
    autocast = autocast_context(cfg, next(engine.module.parameters()).device.type)
    fault = cfg.fault()
    media_every = cfg.media_every or cfg.total_steps
    host: dict[str, float] = {"data_wait_s": 0.0}
    t_log, last_log, reported = time.perf_counter(), start, {"step": start}
    for step in range(start, cfg.total_steps):
        done = step + 1
        log_now = done % cfg.log_every == 0 or done == cfg.total_steps
        save_now = done % spec.checkpoint.every == 0 or done == cfg.total_steps
        for group in engine.optimizer.param_groups:  # the schedule is a function of the step alone (resumes exactly)
            group["lr"] = spec.optim.lr * spec.optim.lr_factor(step, cfg.total_steps)
        for micro in range(cfg.grad_accum):
            t_data = time.perf_counter()
            batch = next(stream)
            host["data_wait_s"] += time.perf_counter() - t_data
            if step == start and micro == 0:
                startup["startup_first_batch_s"] = since_job()
            got = (int(batch.pop("_step")[0]), int(batch.pop("_micro")[0]))
            if got != (step, micro):  # the stream must be exactly the run's, or resuming would not be exact
                raise RuntimeError(f"rank {rank}: data stream at {got}, training at {(step, micro)}")
            batch = {k: _tensor(v).to(engine.device, dtype if v.dtype.kind == "f" else None) for k, v in batch.items()}
            _seed(cfg, step * cfg.grad_accum + micro, rank)
            with autocast:
                loss, metrics = task.run_step(engine, batch, log_now)
            if fault and fault[0] == "nan" and done == fault[1] and rank == 0:
                loss = loss * float("nan")
            acc.watch_loss(loss, done)
            acc.add({"loss": loss, **metrics})
            engine.backward(loss)
            if log_now and micro == cfg.grad_accum - 1:  # gradients exist now, not after the step
                memory = rank_memory(engine)
            engine.step()
        if ema is not None:
            ema.update()
        if fault and fault[0] == "raise" and done == fault[1] and start == 0 and rank == 0:
            raise RuntimeError(f"injected failure at step {done} (runtime.inject_fault)")
        if step == start:
            startup["startup_s"] = since_job()  # job start to the end of this worker's first step
        if not (log_now or save_now):
            continue
        bad = acc.nonfinite(world)
        if bad:  # stop before anything non-finite is checkpointed or registered; every rank leaves here together
            first = min(bad.values())
            if rank == 0:
                ray.get(spec.outcome.record.remote({"nonfinite_step": first,
                                                    "nonfinite_ranks": sorted(r for r, s in bad.items() if s == first)}))
                if sink is not None:
                    sink.add(done, {"nonfinite_loss_step": first})
            return
        reported = {"step": done}
        if log_now:
            elapsed = time.perf_counter() - t_log
            reported.update(acc.reduce(world))
            reported.update(lr=engine.optimizer.param_groups[0]["lr"], step_s=elapsed / (done - last_log),
                            data_wait_s=host["data_wait_s"], **memory)
            reported["data_wait_frac"] = host["data_wait_s"] / max(elapsed, 1e-9)
            if spec.job_started and startup:
                reported.update(startup)
                startup = {}
            host["data_wait_s"], t_log, last_log = 0.0, time.perf_counter(), done
        media_now = done % media_every == 0 or done == cfg.total_steps
        if media_now:
            reported.update(_media(task, engine, rank, done, sink))
        if sink is not None and (log_now or media_now):
            sink.add(done, {k: v for k, v in reported.items() if isinstance(v, (int, float)) and k != "step"})
        if save_now:  # checkpoint first; the logs follow in the background
            with tempfile.TemporaryDirectory() as tmp:
                engine.save_checkpoint(tmp, tag="state", client_state={"step": done})
                if ema is not None:
                    ema.save(Path(tmp))
                if rank == 0:  # Ray merges every rank's files into one checkpoint folder
                    (Path(tmp) / PROGRESS_FILE).write_text(json.dumps({"step": done}))
                reported["checkpoint_score"] = _checkpoint_score(done, spec.checkpoint)
                ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            if sink is not None:  # the logs up to a checkpoint go out with it while the server answers; never waited on when not
                sink.flush(timeout=10 if sink.healthy else 0)
        else:
            ray.train.report(reported)


# ---------------------------------------------------------------- driver

def run_name(task: TrainingTask, ckpt: CheckpointConfig, level: str = "") -> str:
    """The given name, or one that two jobs started in the same second do not share."""
    if ckpt.run_name:
        return ckpt.run_name
    parts = [task.name, level, time.strftime("%Y%m%d-%H%M%S"), f"{os.getpid()}"]
    return "-".join(p for p in parts if p)


def fit(spec: TrainSpec, name: str):
    """Train with Ray Train; returns the ``ray.train.Result`` (its checkpoint holds the ZeRO state) and
    what the workers recorded in the ``RunOutcome``.

    A run ``name`` that exists under the storage resumes from its newest checkpoint: Ray
    restores it to the workers, which read their step from it."""
    import ray
    from ray.train import CheckpointConfig as RayCheckpointConfig
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg, ckpt = spec.runtime, spec.checkpoint
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cfg.use_gpu else "cpu")
    from pipeline.services import use_venv_torch_extensions

    use_venv_torch_extensions()
    spec.outcome = ray.remote(num_cpus=0)(RunOutcome).remote()
    milestones = cfg.total_steps // ckpt.milestone_every if ckpt.milestone_every else 0
    trainer = TorchTrainer(
        train_loop, train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=ckpt.storage_uri(),
                             logging_config=LoggingConfig(log_level="WARNING"),  # not every report's metrics on the console
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=RayCheckpointConfig(num_to_keep=ckpt.keep_last + milestones,
                                                                   checkpoint_score_attribute="checkpoint_score",
                                                                   checkpoint_score_order="max")))
    result = trainer.fit()
    facts = ray.get(spec.outcome.get.remote())
    ray.kill(spec.outcome)
    spec.outcome = None
    return result, facts
