"""The VQ-VAE stage for real: Ray Train workers running DeepSpeed ZeRO on the CPU, Ray Data
streams, MLflow tracking and registry. (The cluster path, `ray job submit`, is in
test_preprocess_e2e.py, which trains on the shards it makes.)"""

from pathlib import Path

import pytest
import torch

from models.vqvae import TINY
from pipeline.config import from_dict
from pipeline.registry import RegistryError, load_model
from pipeline.train.export import export_safetensors
from pipeline.train.vqvae_job import TrainVQVAEConfig, train_vqvae
from pipeline.weights import load_safetensors

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(demo_shards):
    return demo_shards


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    from pipeline.services import init_ray

    init_ray(None, 4, progress=False)  # more logical CPUs than workers: the data actors need some too
    return f"sqlite:///{tmp_path_factory.mktemp('vqvae-mlflow') / 'mlflow.db'}"


def test_embedded_ray_has_token_auth_and_listens_on_loopback_only(mlflow_db):
    import os

    from processes import all_loopback, listening_addresses

    from pipeline.ray_auth import token_path

    assert os.environ["RAY_AUTH_MODE"] == "token" and token_path().stat().st_mode & 0o077 == 0
    listening = listening_addresses(os.getpid())  # GCS, raylet, workers, agents: children of this process
    assert all_loopback(listening), listening


def _config(shards, db, storage, level="bottom", run_name="", every=2, **runtime):
    run = {"workers": 2, "zero_stage": 2, "total_steps": 6, "log_every": 1, **runtime}
    return from_dict(TrainVQVAEConfig, {"level": level, "preset": "tiny", "shards": str(shards), "mlflow_tracking_uri": db,
                                        "runtime": run, "optim": {"warmup_steps": 2, "lr": 2e-3},
                                        "checkpoint": {"every": every, "storage": str(storage), "run_name": run_name}})


def _weights(checkpoint, tmp_path) -> dict:
    out = tmp_path / f"export-{abs(hash(checkpoint))}"
    export_safetensors(Path(checkpoint), out)
    return load_safetensors(out)


def _history(db, run_id, key):
    import mlflow

    return [m.value for m in sorted(mlflow.MlflowClient(tracking_uri=db).get_metric_history(run_id, key), key=lambda m: m.step)]


def test_worker_failure_and_new_job_both_resume_to_the_uninterrupted_weights(shards, mlflow_db, tmp_path):
    straight = train_vqvae(_config(shards, mlflow_db, tmp_path, run_name="straight"))
    restarted = train_vqvae(_config(shards, mlflow_db, tmp_path, run_name="restarted", inject_fault="raise:5"))
    with pytest.raises(Exception, match="injected failure"):  # no restarts allowed: the job dies at step 5...
        train_vqvae(_config(shards, mlflow_db, tmp_path, run_name="resumed", inject_fault="raise:5", max_failures=0))
    resumed = train_vqvae(_config(shards, mlflow_db, tmp_path, run_name="resumed"))  # ...and a new job continues it
    assert resumed["mlflow_run_id"] != straight["mlflow_run_id"]
    reference = _weights(straight["checkpoint"], tmp_path)
    assert "codebook.codes" in reference
    for other in (restarted, resumed):
        state = _weights(other["checkpoint"], tmp_path)
        assert set(state) == set(reference)
        for name, tensor in reference.items():
            assert torch.equal(tensor, state[name]), name
    # the resumed job logged into the run it continued: steps 1-6, each once
    import mlflow

    history = mlflow.MlflowClient(tracking_uri=mlflow_db).get_metric_history(resumed["mlflow_run_id"], "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    # a rerun of a finished run trains nothing and registers nothing new
    again = train_vqvae(_config(shards, mlflow_db, tmp_path, run_name="straight"))
    assert again["registered"] == straight["registered"] and again["mlflow_run_id"] == straight["mlflow_run_id"]
    history = mlflow.MlflowClient(tracking_uri=mlflow_db).get_metric_history(straight["mlflow_run_id"], "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    # and it learned: the fixed eval windows reconstruct better than through an untrained model
    from pipeline.data.audio_windows import WindowSampler
    from pipeline.train.vqvae_task import VQVAETask, estimate_loss_scales

    task = VQVAETask(TINY["bottom"], str(shards), 8192, estimate_loss_scales(WindowSampler(shards, 8192), TINY["bottom"]))
    assert _history(mlflow_db, straight["mlflow_run_id"], "eval_loss")[-1] < 0.9 * _untrained_eval_loss(task)


def _untrained_eval_loss(task) -> float:
    """The same eval windows through a fresh model whose codebook is initialised from them."""
    torch.manual_seed(0)
    task.setup(torch.device("cpu"))
    model = task.build_model()
    with torch.no_grad():
        model.train()
        from pipeline.train.vqvae_task import MEDIA_STREAM

        model(torch.from_numpy(task.eval_sampler.load_batch(task.eval_sampler.epoch(0, task.media_windows, stream=MEDIA_STREAM))))
        model.eval()
        return task.media(model, None)["loss"]


# The tiny top level (hop 128 through two blocks of width 16) sits on the "output ~ silence" plateau
# for its first few dozen steps (measured: eval loss 2.95 untrained, 3.00 after 12 steps, 2.81 after
# 36): its test checks everything but learning, which bench/bench_vqvae_learning.py measures for real.
# The middle level learns under bf16 autocast (fp32 weights) where the CPU has bf16 compute.
@pytest.mark.parametrize("level,stage,learns,autocast", [("middle", 3, True, "bf16"), ("top", 2, False, "off")])
def test_a_level_trains_registers_and_logs(shards, mlflow_db, tmp_path, level, stage, learns, autocast):
    import mlflow

    from pipeline.data.audio_windows import WindowSampler
    from pipeline.train.engine import bf16_supported
    from pipeline.train.vqvae_task import VQVAETask, estimate_loss_scales

    autocast = autocast if bf16_supported("cpu") else "off"
    cfg = _config(shards, mlflow_db, tmp_path, level=level, zero_stage=stage, total_steps=12, every=6, log_every=3, media_every=6,
                  autocast=autocast)
    summary = train_vqvae(cfg)
    client = mlflow.MlflowClient(tracking_uri=mlflow_db)
    mv = client.get_model_version_by_alias(f"jukebox-vqvae-{level}", "current")
    assert f"models:/jukebox-vqvae-{level}/{mv.version}" == summary["registered"]
    assert mv.tags["hop_length"] == str(TINY[level].hop_length) and mv.tags["sample_rate"] == "44100"
    assert mv.tags["codebook_size"] == "256" and '"manifest_sha256"' in mv.tags["lineage"]
    artifacts = {a.path for step in (6, 12) for a in client.list_artifacts(summary["mlflow_run_id"], f"media/step_{step:07d}")}
    assert {"media/step_0000012/spectrograms.png", "media/step_0000012/0_reconstruction.wav"} <= artifacts
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.params["runtime.zero_stage"] == str(stage) and run.data.tags["manifest_sha256"]
    assert run.data.params["runtime.autocast"] == autocast
    # metrics averaged over the 3 steps (and both ranks) of each log interval, sent in batched calls
    assert len(_history(mlflow_db, summary["mlflow_run_id"], "loss")) == 4
    assert len(_history(mlflow_db, summary["mlflow_run_id"], "spectral_convergence_db")) == 4  # a log-step extra
    wait = _history(mlflow_db, summary["mlflow_run_id"], "data_wait_frac")
    assert max(wait[1:]) < 0.5  # after the first interval (actor start) training does not wait on data
    # the registered model is rebuilt from its card and loads; a consumer that needs another hop is refused, by name
    model, reg = load_model(f"models:/jukebox-vqvae-{level}@current", mlflow_db, cache=tmp_path / "registry",
                            needs={"hop_length": TINY[level].hop_length, "sample_rate": 44100, "codebook_size": 256})
    assert reg.card["level"] == level and reg.card["config"]["level"] == TINY[level].level and model.cfg == TINY[level]
    with pytest.raises(RegistryError, match="hop_length is 32|hop_length is 128"):
        load_model(f"models:/jukebox-vqvae-{level}@current", mlflow_db, cache=tmp_path / "registry", needs={"hop_length": 8})
    with pytest.raises(RegistryError, match="not in the registry"):
        load_model(f"models:/jukebox-vqvae-{level}@nonexistent", mlflow_db)
    sampler = WindowSampler(shards, 8192)
    task = VQVAETask(TINY[level], str(shards), 8192, estimate_loss_scales(sampler, TINY[level]))
    trained = _history(mlflow_db, summary["mlflow_run_id"], "eval_loss")[-1]
    assert trained < 0.9 * _untrained_eval_loss(task) or not learns, trained
