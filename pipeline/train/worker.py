"""What every Ray Train worker runs: build the engine, restore, and step until the end.

Determinism: the batch of a step and the random state used inside it are functions of
(seed, step, micro-step, rank) alone, so a run resumed from a checkpoint continues exactly
where the uninterrupted run would be. Metrics stay on the device between log steps; a
non-finite loss stops every rank before anything is checkpointed or registered; rank 0's
MLflow logging goes through a queue that an outage does not stop (``pipeline.tracking.sink``).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.train.checkpointing import CheckpointManager, checkpoint_score, read_progress
from pipeline.train.ema import PartitionedEMA
from pipeline.train.engine import autocast_context, build_engine, seed_step
from pipeline.train.loader import RankStream
from pipeline.train.metrics import MetricAccumulator, rank_memory
from pipeline.train.protocol import RunContext, TrainSpec


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A batch array from the object store (read-only there) as a tensor."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def train_loop(config: dict) -> None:
    """Runs in every Ray Train worker."""
    import ray.train

    spec: TrainSpec = config["spec"]
    ctx: RunContext = config["context"]
    cfg, task = spec.runtime, spec.task
    clock = JobClock(ctx.job_started)
    train_ctx = ray.train.get_context()
    rank, world = train_ctx.get_world_rank(), train_ctx.get_world_size()
    torch.set_num_threads(cfg.threads_per_worker)
    device = "cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"
    quiet_worker_logs(device)
    restored = contextlib.ExitStack()
    checkpoint = ray.train.get_checkpoint()  # the one Ray restores: after a worker-group restart, or a resumed run
    folder = Path(restored.enter_context(checkpoint.as_directory())) if checkpoint else None
    start = read_progress(folder, cfg.total_steps) if folder else 0
    # the loader actor starts now, in its own process, and loads while the engine is built
    stream = RankStream(spec.source, cfg, rank, world, start) if start < cfg.total_steps else iter(())
    task.setup(torch.device(device))
    engine, dtype = build_engine(spec, world, device)
    clock.mark("startup_engine_s")
    ema = PartitionedEMA(engine.module, cfg.ema_decay, rank, world) if cfg.ema_decay else None
    checkpoints = CheckpointManager(rank, cfg.total_steps)
    checkpoints.register_engine(engine)
    if ema is not None:
        checkpoints.register_ema(ema)
    if folder:
        checkpoints.load(folder)
    restored.close()
    sink = None
    if rank == 0 and ctx.mlflow_run_id:
        from pipeline.tracking.sink import MetricsSink

        sink = MetricsSink(spec.tracking.uri, ctx.mlflow_run_id)
    finished = False
    try:
        StepLoop(spec, ctx, engine, dtype, ema, checkpoints, rank, world, sink, clock).run(stream, start)
        finished = True
    finally:
        if sink is not None:  # deliver what is queued (after an error too, briefly), within a bound
            ray.get(ctx.outcome.record.remote(sink.close(timeout=120 if finished else 10)))


def quiet_worker_logs(device: str) -> None:
    """What every worker would otherwise print, at its source: Ray Train's INFO line with every
    report's metrics (they go to MLflow), and DeepSpeed's accelerator guess (we know the device).
    Warnings and errors still show."""
    import logging
    import os

    from ray.train.v2._internal.execution import context  # its logger is named by its file

    logging.getLogger(context.__file__).setLevel(logging.WARNING)
    os.environ.setdefault("DS_ACCELERATOR", device)


class JobClock:
    """Where the time from the job's start to the first step goes (logged once, with the first log step)."""

    def __init__(self, job_started: float):
        self.job_started = job_started
        self.marks: dict[str, float] = {}
        self.mark("startup_worker_s")

    def since_job(self) -> float:
        return time.time() - self.job_started if self.job_started else 0.0

    def mark(self, name: str) -> None:
        self.marks[name] = self.since_job()

    def take(self) -> dict[str, float]:
        """The marks, once (empty afterwards, or when the job's start is unknown)."""
        marks, self.marks = (self.marks if self.job_started else {}), {}
        return marks


class StepLoop:
    """The optimizer steps of one worker, from ``start`` to the end of the run."""

    def __init__(self, spec: TrainSpec, ctx: RunContext, engine, dtype, ema, checkpoints: CheckpointManager, rank: int,
                 world: int, sink, clock: JobClock):
        self.spec, self.ctx, self.engine, self.dtype, self.ema = spec, ctx, engine, dtype, ema
        self.checkpoints, self.rank, self.world, self.sink, self.clock = checkpoints, rank, world, sink, clock
        self.cfg = spec.runtime
        self.acc = MetricAccumulator(engine.device)
        self.autocast = autocast_context(self.cfg, next(engine.module.parameters()).device.type)
        self.fault = self.cfg.fault()
        self.media_every = self.cfg.media_every or self.cfg.total_steps
        self.data_wait_s = 0.0
        self.memory: dict[str, float] = {}

    def run(self, stream, start: int) -> None:
        cfg = self.cfg
        self.t_log, self.last_log = time.perf_counter(), start
        for step in range(start, cfg.total_steps):
            done = step + 1
            log_now = done % cfg.log_every == 0 or done == cfg.total_steps
            save_now = done % self.spec.checkpoint.every == 0 or done == cfg.total_steps
            self.optimizer_step(stream, step, start, log_now)
            if self.fault and self.fault[0] == "raise" and done == self.fault[1] and start == 0 and self.rank == 0:
                raise RuntimeError(f"injected failure at step {done} (runtime.inject_fault)")
            if step == start:
                self.clock.mark("startup_s")  # job start to the end of this worker's first step
            if (log_now or save_now) and not self.after_step(done, log_now, save_now):
                return

    def optimizer_step(self, stream, step: int, start: int, log_now: bool) -> None:
        cfg, engine = self.cfg, self.engine
        for group in engine.optimizer.param_groups:  # the schedule is a function of the step alone (resumes exactly)
            group["lr"] = self.spec.optim.lr * self.spec.optim.lr_factor(step, cfg.total_steps)
        for micro in range(cfg.grad_accum):
            batch = self.next_batch(stream, step, micro, first=step == start and micro == 0)
            seed_step(cfg, step * cfg.grad_accum + micro, self.rank)
            with self.autocast:
                loss, metrics = self.spec.task.run_step(engine, batch, log_now)
            if self.fault and self.fault[0] == "nan" and step + 1 == self.fault[1] and self.rank == 0:
                loss = loss * float("nan")
            self.acc.watch_loss(loss, step + 1)
            self.acc.add({"loss": loss, **metrics})
            engine.backward(loss)
            if log_now and micro == cfg.grad_accum - 1:  # gradients exist now, not after the step
                self.memory = rank_memory(engine)
            engine.step()
        if self.ema is not None:
            self.ema.update()

    def next_batch(self, stream, step: int, micro: int, first: bool) -> dict[str, torch.Tensor]:
        t_data = time.perf_counter()
        batch = next(stream)
        self.data_wait_s += time.perf_counter() - t_data
        if first:
            self.clock.mark("startup_first_batch_s")
        got = (int(batch.pop("_step")[0]), int(batch.pop("_micro")[0]))
        if got != (step, micro):  # the stream must be exactly the run's, or resuming would not be exact
            raise RuntimeError(f"rank {self.rank}: data stream at {got}, training at {(step, micro)}")
        return {k: _tensor(v).to(self.engine.device, self.dtype if v.dtype.kind == "f" else None) for k, v in batch.items()}

    def after_step(self, done: int, log_now: bool, save_now: bool) -> bool:
        """Log, write media, checkpoint; False when a non-finite loss stops the run (every rank together)."""
        import ray.train

        bad = self.acc.nonfinite(self.world)
        if bad:  # stop before anything non-finite is checkpointed or registered
            first = min(bad.values())
            if self.rank == 0:
                ray.get(self.ctx.outcome.record.remote({"nonfinite_step": first,
                                                        "nonfinite_ranks": sorted(r for r, s in bad.items() if s == first)}))
                if self.sink is not None:
                    self.sink.add(done, {"nonfinite_loss_step": first})
            return False
        reported = {"step": done, **(self.log_metrics(done) if log_now else {})}
        media_now = done % self.media_every == 0 or done == self.cfg.total_steps
        if media_now:
            reported.update(self.media(done))
        if self.sink is not None and (log_now or media_now):
            self.sink.add(done, {k: v for k, v in reported.items() if isinstance(v, (int, float)) and k != "step"})
        if save_now:
            self.save(done, reported)
        else:
            ray.train.report(reported)
        return True

    def log_metrics(self, done: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t_log
        out = self.acc.reduce(self.world)
        out.update(lr=self.engine.optimizer.param_groups[0]["lr"], step_s=elapsed / (done - self.last_log),
                   data_wait_s=self.data_wait_s, data_wait_frac=self.data_wait_s / max(elapsed, 1e-9), **self.memory)
        out.update(self.clock.take())
        self.data_wait_s, self.t_log, self.last_log = 0.0, time.perf_counter(), done
        if self.rank == 0:  # the console's progress line: the full metrics go to MLflow
            total, step_s = self.cfg.total_steps, out["step_s"]
            print(f"[{self.ctx.name}] step {done}/{total}, loss {out.get('loss', float('nan')):.4f}, {step_s:.2f} s/step, "
                  f"~{(total - done) * step_s:,.0f} s left", flush=True)
        return out

    def media(self, step: int) -> dict[str, float]:
        engine = self.engine
        engine.eval()
        with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
            metrics = self.spec.task.media(engine, Path(tmp) if self.rank == 0 else None)
            if self.sink is not None and any(Path(tmp).iterdir()):
                self.sink.artifacts(Path(tmp), f"media/step_{step:07d}")
        engine.train()
        return {f"eval_{k}": v for k, v in metrics.items()}

    def save(self, done: int, reported: dict) -> None:
        """Checkpoint first; the logs follow in the background."""
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            self.checkpoints.save(Path(tmp), done)
            reported["checkpoint_score"] = checkpoint_score(done, self.spec.checkpoint)
            ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        if self.sink is not None:  # the logs up to a checkpoint go out with it while the server answers; never waited on when not
            self.sink.flush(timeout=10 if self.sink.healthy else 0)
