"""Checkpoints are data: a file carrying pickled code is refused, never run (issue 13, item 2)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from pipeline.train.checkpointing import PROGRESS_FILE, read_progress
from pipeline.train.export import checkpoint_tensors
from pipeline.weights import weights_only_loads


class Payload:
    """Unpickling this opens (creates) a file: what a hostile checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def hostile_checkpoint(folder: Path) -> Path:
    state = folder / "state"
    state.mkdir(parents=True)
    marker = folder / "payload_ran"
    torch.save({"module": {"w": torch.ones(2)}, "extra": Payload(marker)}, state / "mp_rank_00_model_states.pt")
    return marker


def test_export_refuses_a_pickled_payload(tmp_path):
    marker = hostile_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        list(checkpoint_tensors(tmp_path))
    assert not marker.exists()


def test_deepspeeds_own_loader_is_weights_only_in_the_span(tmp_path):
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    marker = hostile_checkpoint(tmp_path)
    path = str(tmp_path / "state" / "mp_rank_00_model_states.pt")
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        TorchCheckpointEngine().load(path, map_location="cpu")  # the call engine.load_checkpoint makes
    assert not marker.exists() and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_deepspeed_state_classes_still_load(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    dynamic = DynamicLossScaler(2.0 ** 16, 2, 1000, delayed_shift=2, consecutive_hysteresis=False)
    state = {"loss_scaler": LossScaler(1.0), "dynamic": dynamic,
             "zero_stage": ZeroStageEnum.gradients, "address": fragment_address(numel=4, start=0), "step": 3}
    torch.save(state, tmp_path / "optim_states.pt")
    with weights_only_loads():
        back = torch.load(tmp_path / "optim_states.pt", weights_only=False)
    assert back["zero_stage"] == ZeroStageEnum.gradients and back["address"].numel == 4
    assert back["loss_scaler"].cur_scale == 1.0 and back["step"] == 3


@pytest.mark.parametrize("content, why", [({"step": 11}, "not one of this run's"), ({"step": -1}, "not one of"),
                                          ({"step": "3"}, "not one of"), ({"step": 2.0}, "not one of"),
                                          ({}, "unreadable"), ("[", "unreadable")])
def test_progress_outside_the_run_is_refused(tmp_path, content, why):
    (tmp_path / PROGRESS_FILE).write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(RuntimeError, match=why):
        read_progress(tmp_path, total_steps=10)


def test_progress_within_the_run_is_read(tmp_path):
    (tmp_path / PROGRESS_FILE).write_text(json.dumps({"step": 10}))
    assert read_progress(tmp_path, total_steps=10) == 10
