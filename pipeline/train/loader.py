"""Each rank's loader actor and its stream of micro-batches (what a ``DataSource`` runs in).

Nothing here imports torch: a loader actor is a fresh process, and importing torch there
(1.2 s on an idle core) came before every run's first batch.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from pipeline.train.config import RuntimeConfig
from pipeline.train.protocol import DataSource


class BatchLoader:
    """A Ray actor that loads one rank's micro-batches (``DataSource.load_batch``) on request."""

    def __init__(self, source: DataSource, rank: int, world: int, size: int):
        self.source, self.rank, self.world, self.size = source, rank, world, size
        source.open()

    def load(self, step: int, micro: int) -> dict[str, np.ndarray]:
        out = dict(self.source.load_batch(step, micro, self.rank, self.world, self.size))
        out["_step"] = np.full(self.size, step, dtype=np.int64)
        out["_micro"] = np.full(self.size, micro, dtype=np.int64)
        return out


class RankStream:
    """This rank's micro-batches from step ``start`` to the end, in order, ``prefetch`` requests ahead.

    Made by the worker once it knows the step it resumes from, so a restarted or resumed run
    reads nothing it already trained on, and before it builds its engine: the loader actor
    starts (a process of its own) while DeepSpeed initialises, and the first batches are
    waiting when the first step asks. Loading is a pure function of (step, micro-step, rank),
    so Ray may restart a lost loader and retry its requests without changing the stream.

    Why not Ray Data: one loader per rank with strict order is all this needs, and a Ray Data
    stream made the same way (an actor pool of one, ``preserve_order``) started its actor only
    when iterated, after the engine, and brought three more actors of its own: ~5 s more to
    every run's first step (measured; bench/bench_train_runtime.py).
    """

    def __init__(self, source: DataSource, cfg: RuntimeConfig, rank: int, world: int, start: int):
        import ray

        loader = ray.remote(num_cpus=cfg.data_cpus, max_restarts=3, max_task_retries=3)(BatchLoader)
        self.loader = loader.remote(source, rank, world, cfg.batch_size)
        self.keys = iter([(step, micro) for step in range(start, cfg.total_steps) for micro in range(cfg.grad_accum)])
        self.pending: deque = deque()
        for _ in range(max(1, cfg.prefetch_batches)):
            self._request()

    def _request(self) -> None:
        key = next(self.keys, None)
        if key is not None:
            self.pending.append(self.loader.load.remote(*key))

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        import ray

        if not self.pending:
            raise StopIteration
        ref = self.pending.popleft()
        self._request()
        return ray.get(ref)
