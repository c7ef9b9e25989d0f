"""What a model family writes, and what the runtime ships to its workers.

A model family writes two things (docs/architecture.md, "a training job"):

- a ``DataSource``, which runs in the loader actors: it reads shards or code caches and
  returns the micro-batch of (step, micro-step, rank). It never holds a model, so nothing
  heavy travels to the data actors.
- a ``TrainingTask``, which runs in the workers: ``setup()`` once per worker (load a frozen
  VQ-VAE from the registry, say), ``build_model()`` (under ``deepspeed.zero.Init`` at ZeRO-3,
  so no rank ever holds the whole model), and ``run_step()``: the loss and metrics of a
  batch, as tensors.

The runtime then gets a ``TrainSpec``, frozen: what the run is (task, data, its config
sections, where it is tracked, its name). What only exists once the run is under way (its
MLflow run, when the job started, the actor the workers report to) is the ``RunContext``.

Nothing here imports torch at load time: the loader actors import this module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig

if TYPE_CHECKING:
    import torch


class DataSource(ABC):
    """What the loader actors run; picklable, and it holds no model."""

    def open(self) -> None:
        """Open readers, once per loader actor."""

    @abstractmethod
    def load_batch(self, step: int, micro: int, rank: int, world: int, size: int) -> dict[str, np.ndarray]:
        """This rank's micro-batch of (step, micro): arrays with ``size`` rows; a pure function of the arguments."""


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


@dataclass(frozen=True)
class Tracking:
    """Where the run is logged and the model registered."""

    uri: str = ""
    experiment: str = "jukebox-train"
    register: str = ""  # registered model name ("" = do not register)
    alias: str = "current"


@dataclass(frozen=True)
class TrainSpec:
    """What a run is: shipped once to every worker with the train loop's config."""

    task: TrainingTask
    source: DataSource
    runtime: RuntimeConfig
    optim: OptimConfig
    checkpoint: CheckpointConfig
    tracking: Tracking


@dataclass
class RunContext:
    """What exists only while the run is under way."""

    name: str = ""  # the Ray Train run (a rerun with the same name resumes it)
    mlflow_run_id: str = ""
    job_started: float = 0.0  # time.time() when the job started, for the start-up metrics
    outcome: Any = None  # a RunOutcome actor: what the workers tell the driver beyond the checkpoint


class RunOutcome:
    """A tiny actor the workers tell what Ray's ``Result`` cannot carry (it holds only the last
    checkpoint's metrics): a non-finite loss (step, ranks), and what MLflow did not receive."""

    def __init__(self):
        self.facts: dict[str, Any] = {}

    def record(self, facts: dict[str, Any]) -> None:
        self.facts.update(facts)

    def get(self) -> dict[str, Any]:
        return self.facts
