"""A model that cannot fit is refused before any worker starts, with the memory it needs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import ConfigError, from_dict
from pipeline.train import memory
from pipeline.train.config import RuntimeConfig

ROOT = Path(__file__).resolve().parents[3]


def test_the_estimate_follows_zero_stage_precision_and_ranks():
    n = 1_000_000
    plain = memory.estimate(n, from_dict(RuntimeConfig, {"zero_stage": 0, "workers": 1}), "fp32")
    assert (plain.weights, plain.grads, plain.optimizer) == (4 * n, 4 * n, 8 * n)  # torch AdamW: two moments
    z1 = memory.estimate(n, from_dict(RuntimeConfig, {"zero_stage": 1, "workers": 4}), "fp32")
    assert (z1.weights, z1.grads, z1.optimizer) == (4 * n, 4 * n, 12 * n / 4)  # + DeepSpeed's fp32 partition
    z2 = memory.estimate(n, from_dict(RuntimeConfig, {"zero_stage": 2, "workers": 4}), "bf16")
    assert (z2.weights, z2.grads, z2.optimizer) == (2 * n, 2 * n / 4, 12 * n / 4)
    z3 = memory.estimate(n, from_dict(RuntimeConfig, {"zero_stage": 3, "workers": 4, "offload": True}), "bf16")
    assert (z3.weights, z3.grads) == (2 * n / 4, 2 * n / 4) and z3.device_bytes == z3.weights + z3.grads


def test_the_paper_top_prior_is_refused_here_and_a_tiny_one_is_not(monkeypatch):
    from models.prior import Prior
    from models.prior_configs import PAPER, TINY

    monkeypatch.setattr(memory, "host_memory_bytes", lambda: 24 * memory.GIB)
    rt = from_dict(RuntimeConfig, {})
    started = time.time()
    with pytest.raises(ConfigError, match=r"5,640.5 M parameters.*needs 1\d\d\.\d GiB.*has 24.0 GiB.*--preset tiny"):
        memory.check_fits(lambda: Prior(PAPER["top_lyrics"]), rt, "the paper top prior", local=True, instead="Use --preset tiny.")
    assert time.time() - started < 30  # counted on the meta device: nothing allocated
    assert memory.check_fits(lambda: Prior(TINY["top"]), rt, "the tiny top prior", local=True, instead="").params < 5_000_000
    # on a cluster the ranks' nodes are not known here: only a GPU rank's device would be checked
    memory.check_fits(lambda: Prior(PAPER["top_lyrics"]), rt, "the paper top prior", local=False, instead="")


def test_the_job_with_the_paper_preset_stops_in_seconds_with_exit_2(tmp_path):
    (tmp_path / "songs").mkdir()
    started = time.time()
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "train_prior.py"), "--level", "top", "--shards", str(tmp_path),
                           "--mlflow_tracking_uri", f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the paper top prior cannot train here" in done.stderr and "GiB" in done.stderr
    assert time.time() - started < 120
    assert not (tmp_path / "m.db").exists()  # refused before MLflow, the registry or Ray were touched
