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


def test_every_part_runs_on_the_cpu_into_one_report_and_a_failing_part_does_not_stop_the_rest(tmp_path, monkeypatch):
    """The benchmark parts with --device cpu --quick (the flag reaches each); the demo part replaced
    by a command that fails, which is recorded with its exit status while the others still run."""
    from bench import gpu_check

    real = gpu_check.commands

    def failing_demo(device, out, quick):
        cmds = real(device, out, quick)
        cmds["demo"] = [sys.executable, "-c", "import sys; print('the demo broke'); sys.exit(3)"]
        return cmds

    monkeypatch.setattr(gpu_check, "commands", failing_demo)
    monkeypatch.setenv("JUKEBOX_BENCH_RESULTS", str(tmp_path / "elsewhere"))  # the report's own folder wins
    rc = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 1 and set(report["parts"]) == {"demo", "vqvae_step", "prior_step", "sampling"}
    demo = report["parts"].pop("demo")
    assert not demo["ok"] and demo["exit"] == 3 and demo["output_tail"] == ["the demo broke"]
    for name, part in report["parts"].items():
        assert part["ok"] and part["figures"]["device"]["device"] == "cpu", name
        assert part["command"][part["command"].index("--device") + 1] == "cpu"
    figures = {name: part["figures"] for name, part in report["parts"].items()}
    assert figures["vqvae_step"]["results"]["fp32"]["step_s"] > 0
    assert figures["prior_step"]["train_eager"]["step_s"] > 0
    assert figures["sampling"]["tokens"][0]["tokens_per_s"] > 0
    assert not (tmp_path / "elsewhere").exists() and not (common.ROOT / "bench" / "results" / "gpu_check.json").exists()
