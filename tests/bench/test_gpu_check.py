"""bench/gpu_check.sh: the device it picks, what it says without a GPU, and its parts run end to end
on the CPU (a few steps each) into one JSON -- what can be checked before a GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bench import common

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU side of the device choice")
SCRIPT = common.ROOT / "bench" / "gpu_check.sh"


def test_auto_picks_the_cpu_and_cuda_is_refused_with_the_reason():
    assert common.resolve_device("auto") == "cpu" and common.resolve_device("cpu") == "cpu"
    with pytest.raises(SystemExit, match="sees no GPU here"):
        common.resolve_device("cuda")
    common.synchronize("cpu")  # a no-op without a GPU


def test_without_a_gpu_the_check_says_so_and_runs_nothing(tmp_path):
    run = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                         env={"JUKEBOX_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert run.returncode == 2 and "sees no GPU here" in run.stderr and "--device cpu" in run.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["refused"] and report["parts"] == {} and not report["machine"]["cuda_available"]
    assert not (tmp_path / "results").exists()


def test_every_benchmark_part_runs_on_the_cpu_into_one_report(tmp_path):
    run = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path), "--device", "cpu", "--quick",
                          "--parts", "vqvae_step,prior_step,sampling"],
                         capture_output=True, text=True, env={"JUKEBOX_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(report["parts"]) == {"vqvae_step", "prior_step", "sampling"}
    for name, part in report["parts"].items():
        assert part["ok"] and part["figures"]["device"]["device"] == "cpu", name
        assert "--device" in part["command"] and part["command"][part["command"].index("--device") + 1] == "cpu"
    figures = {name: part["figures"] for name, part in report["parts"].items()}
    assert figures["vqvae_step"]["results"]["fp32"]["step_s"] > 0
    assert figures["prior_step"]["train_eager"]["step_s"] > 0
    assert figures["sampling"]["tokens"][0]["tokens_per_s"] > 0
    assert (common.ROOT / "bench" / "results").resolve() not in {p.parent.resolve() for p in tmp_path.rglob("*.json")}


def test_a_failing_part_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    from bench import gpu_check

    real = gpu_check.commands

    def broken(device, out, quick):
        cmds = real(device, out, quick)
        cmds["vqvae_step"] = cmds["vqvae_step"] + ["--variants", "no such variant"]
        return cmds

    monkeypatch.setattr(gpu_check, "commands", broken)
    monkeypatch.setenv("JUKEBOX_BENCH_RESULTS", str(tmp_path / "elsewhere"))
    rc = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--parts", "vqvae_step,sampling"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 1 and not report["parts"]["vqvae_step"]["ok"] and report["parts"]["sampling"]["ok"]
    assert any("KeyError" in line for line in report["parts"]["vqvae_step"]["output_tail"])
