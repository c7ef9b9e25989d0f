"""A small model family for testing the training runtime itself, cheaper than any real one:
a two-layer MLP (with a LayerNorm and an embedding, to exercise the parameter groups) fitting a
fixed random linear map. Its data source can record every micro-batch it loads, so a test can
count what a resumed run re-read."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.train.protocol import DataSource, TrainingTask

DIM = 16


@dataclass
class ToySource(DataSource):
    load_log: str = ""  # a file: one line "rank step micro" per loaded micro-batch

    def load_batch(self, step, micro, rank, world, size):
        rng = np.random.default_rng([step, micro, rank])
        x = rng.standard_normal((size, DIM)).astype(np.float32)
        w = np.random.default_rng(7).standard_normal((DIM, DIM)).astype(np.float32) / 4
        if self.load_log:
            with open(self.load_log, "a") as f:
                f.write(f"{rank} {step} {micro}\n")
        return {"x": x, "y": np.tanh(x @ w)}


class ToyModel(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.inp = torch.nn.Linear(DIM, width)
        self.norm = torch.nn.LayerNorm(width)
        self.bias_table = torch.nn.Embedding(1, width)
        self.out = torch.nn.Linear(width, DIM)

    def forward(self, x):
        h = torch.relu(self.norm(self.inp(x)) + self.bias_table.weight[0])
        return self.out(h)


@dataclass
class ToyTask(TrainingTask):
    width: int = 64
    step_sleep: float = 0.0  # seconds per step, to give a test time to act mid-run
    name = "toy"

    def build_model(self):
        return ToyModel(self.width)

    def run_step(self, model, batch, log):
        if self.step_sleep:
            time.sleep(self.step_sleep)
        loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return loss, {"pred_scale": loss.detach() * 0 + 1.0} if log else {}

    def media(self, model, folder: Path | None):
        if folder is not None:
            (folder / "note.txt").write_text("toy")
        return {"probe": 1.0}

    def card(self):
        return {"family": "toy", "width": self.width, "lineage": {"data": "synthetic"}}


def toy_spec(tmp: Path, db: str, run_name: str, *, source: ToySource | None = None, task: ToyTask | None = None,
             register: str = "toy-model", **runtime):
    from pipeline.config import from_dict
    from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig
    from pipeline.train.protocol import Tracking, TrainSpec

    ckpt = {k.removeprefix("ckpt_"): runtime.pop(k) for k in list(runtime) if k.startswith("ckpt_")}
    optim = {k.removeprefix("optim_"): runtime.pop(k) for k in list(runtime) if k.startswith("optim_")}
    rt = from_dict(RuntimeConfig, {"workers": 2, "cpus_per_worker": 0.5, "data_cpus": 0.25, "zero_stage": 2, "total_steps": 6,
                                   "log_every": 2, **runtime})
    return TrainSpec(task or ToyTask(), source or ToySource(), rt,
                     from_dict(OptimConfig, {"lr": 1e-2, "warmup_steps": 1, "weight_decay": 0.01, **optim}),
                     from_dict(CheckpointConfig, {"every": 2, "storage": str(tmp / "runs"), "run_name": run_name, **ckpt}),
                     Tracking(db, "toy-train", register, "current"))
