"""The training runtime for real: Ray Train workers running DeepSpeed ZeRO on the CPU."""

import pytest
import torch

from models.vqvae import TINY, VQVAE
from pipeline.train.runtime import RuntimeConfig, consolidated_state_dict, fit
from pipeline.train.vqvae_task import VQVAETask, estimate_loss_scales
from pipeline.train.windows import WindowSampler

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shards(tmp_path_factory, demo_corpus):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path_factory.mktemp("vqvae-shards")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "jobs" / "preprocess.py"), "--input", str(demo_corpus), "--output", str(out),
                    "--progress", "false", "--align.aligner", "linear", "--mlflow_tracking_uri", f"sqlite:///{out / 'm.db'}"],
                   check=True, cwd=root, capture_output=True, timeout=600)
    return out


def _train(shards, storage, name, **overrides):
    from pipeline.runtime import init_ray

    init_ray(None, 4, progress=False)  # more logical CPUs than workers: Ray's own tasks must still get one
    cfg = TINY["bottom"]
    task = VQVAETask(cfg, str(shards), 8192, estimate_loss_scales(WindowSampler(shards, 8192), cfg))
    runtime = RuntimeConfig(workers=2, cpus_per_worker=1, zero_stage=2, total_steps=4, checkpoint_every=2, log_every=1,
                            warmup_steps=2, batch_size=2, storage=str(storage), run_name=name, **overrides)
    result = fit(task, runtime)
    with result.checkpoint.as_directory() as folder:
        return result, consolidated_state_dict(folder)


def test_a_worker_failure_resumes_to_the_same_weights_as_an_uninterrupted_run(shards, tmp_path):
    _, uninterrupted = _train(shards, tmp_path, "straight")
    result, restarted = _train(shards, tmp_path, "restarted", fail_at_step=3)
    assert result.metrics["step"] == 4
    assert set(uninterrupted) == set(restarted) and "codebook.codes" in restarted
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, restarted[name]), name
    # the consolidated ZeRO state is a plain state dict of the model, codebook buffers included
    model = VQVAE(TINY["bottom"])
    model.load_state_dict(restarted)
    assert bool(model.codebook.initialised)
