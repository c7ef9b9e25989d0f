"""What a training checkpoint holds, named once: save and load iterate over it.

Each part (the progress note, the DeepSpeed state, the EMA) registers a save and a load
function with the ``CheckpointManager``; adding a part to checkpoints is one ``register``
call, never a second hand-kept list at load time. Ray Train merges every rank's files into
one checkpoint folder and restores it to the workers of a restarted or resumed run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.train.config import CheckpointConfig
from pipeline.weights import weights_only_loads

PROGRESS_FILE = "progress.json"  # rank 0's note in every checkpoint: its step
STATE_TAG = "state"  # DeepSpeed's tag (folder) inside a checkpoint


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


def checkpoint_score(step: int, ckpt: CheckpointConfig) -> float:
    """Ray keeps the highest-scoring checkpoints: milestones outrank every other, the newest come next."""
    return step + (1e12 if ckpt.milestone_every and step % ckpt.milestone_every == 0 else 0)


@dataclass
class _Part:
    name: str
    save: Callable[[Path, int], None]
    load: Callable[[Path, int], None]


class CheckpointManager:
    """The parts of this rank's checkpoint, in the order they are saved and loaded."""

    def __init__(self, rank: int, total_steps: int):
        self.rank, self.total_steps = rank, total_steps
        self.parts: list[_Part] = []

    def register(self, name: str, save: Callable[[Path, int], None], load: Callable[[Path, int], None]) -> None:
        self.parts.append(_Part(name, save, load))

    def register_engine(self, engine) -> None:
        """DeepSpeed's state (weights, optimizer, schedule): every rank saves its partition."""
        def save(folder: Path, step: int) -> None:
            engine.save_checkpoint(str(folder), tag=STATE_TAG, client_state={"step": step})

        def load(folder: Path, step: int) -> None:
            with weights_only_loads():  # DeepSpeed asks torch.load for weights_only=False
                _, client = engine.load_checkpoint(str(folder), tag=STATE_TAG)
            if int(client["step"]) != step:
                raise RuntimeError(f"checkpoint {folder}: DeepSpeed state at step {client['step']}, progress at {step}")

        self.register("engine", save, load)

    def register_ema(self, ema) -> None:
        self.register("ema", lambda folder, step: ema.save(folder), lambda folder, step: ema.load(folder))

    def save(self, folder: Path, step: int) -> None:
        for part in self.parts:
            part.save(folder, step)
        if self.rank == 0:  # last: a folder with a progress note holds every part
            (folder / PROGRESS_FILE).write_text(json.dumps({"step": step}))

    def load(self, folder: Path) -> int:
        """Restore every part from ``folder``; returns the step it was saved at."""
        step = read_progress(folder, self.total_steps)
        for part in self.parts:
            part.load(folder, step)
        return step
