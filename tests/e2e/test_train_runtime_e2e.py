"""The training runtime itself, on a toy model (tests/toy_training.py): ZeRO-3 with the EMA
resumes bitwise without re-reading data, offload trains and registers, a NaN loss stops the
run and registers nothing, an MLflow server that goes away mid-run does not stop training."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from processes import start_mlflow, stop
from toy_training import ToySource, ToyTask, toy_spec

from pipeline.train.export import export_safetensors
from pipeline.train.run import NonFiniteLoss, train_and_register
from pipeline.weights import INDEX_FILE, load_safetensors

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def toy_by_value():
    """The workers cannot import tests/: ship the toy's code with its objects."""
    import ray.cloudpickle
    import toy_training

    ray.cloudpickle.register_pickle_by_value(toy_training)
    yield
    ray.cloudpickle.unregister_pickle_by_value(toy_training)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from pipeline.services import init_ray

    init_ray(None, 4, progress=False)
    return f"sqlite:///{tmp_path_factory.mktemp('runtime-mlflow') / 'mlflow.db'}"


def _loads(log: Path) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in line.split()) for line in log.read_text().splitlines()] if log.exists() else []


def test_zero3_with_ema_resumes_bitwise_without_rereading_data(db, tmp_path):
    straight = train_and_register(toy_spec(tmp_path, db, "z3-straight", zero_stage=3, ema_decay=0.9))
    log = tmp_path / "loads.txt"
    restarted = train_and_register(toy_spec(tmp_path, db, "z3-restarted", zero_stage=3, ema_decay=0.9,
                                            source=ToySource(str(log)), inject_fault="raise:3"))
    a = load_safetensors(_export(straight["checkpoint"], tmp_path / "a"))
    b = load_safetensors(_export(restarted["checkpoint"], tmp_path / "b"))
    assert set(a) == set(b) == {"inp.weight", "inp.bias", "norm.weight", "norm.bias", "bias_table.weight", "out.weight", "out.bias"}
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the registered weights are the EMA's (each rank kept half of it), not the trained ones
    trained = load_safetensors(_export(straight["checkpoint"], tmp_path / "c", ema=False))
    assert not torch.equal(trained["out.weight"], a["out.weight"])
    # the restarted worker group's loaders started at its checkpoint (step 2): steps 0-1 were read once, by the
    # first attempt; the second attempt read steps 2-5 (the first may have loaded ahead past its failure)
    loads = _loads(log)
    for rank in (0, 1):
        steps = [step for r, step, _ in loads if r == rank]
        restart = next(i for i in range(1, len(steps)) if steps[i] < steps[i - 1])
        assert steps[restart:] == [2, 3, 4, 5] and steps.count(0) == steps.count(1) == 1, (rank, steps)


def _export(checkpoint, out: Path, ema: bool = True) -> Path:
    if not ema:  # the trained weights alone: a copy of the checkpoint without the EMA folder
        import shutil

        copy = out.with_name(out.name + "-noema")
        shutil.copytree(checkpoint, copy, ignore=shutil.ignore_patterns("ema"))
        checkpoint = copy
    export_safetensors(Path(checkpoint), out)
    return out


def test_checkpoints_keep_the_last_and_milestones_and_export_shards_with_an_index(db, tmp_path):
    import json

    done = train_and_register(toy_spec(tmp_path, db, "shards", zero_stage=0, total_steps=5, register="",
                                       ckpt_every=1, ckpt_keep_last=1, ckpt_milestone_every=2))
    kept = sorted(json.loads(p.read_text())["step"] for p in (tmp_path / "runs" / "shards").glob("checkpoint_*/progress.json"))
    assert kept == [2, 4, 5], kept  # milestones 2 and 4, and the newest; 1 and 3 deleted
    index = export_safetensors(Path(done["checkpoint"]), tmp_path / "out", max_shard_bytes=2048)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert INDEX_FILE in files and len(files) > 3 and index["metadata"]["total_size"] == sum(
        t.numel() * 4 for t in load_safetensors(tmp_path / "out").values())


def test_offload_trains_with_deepspeed_cpu_adam_and_registers_from_uri_storage(db, tmp_path):
    import mlflow

    done = train_and_register(toy_spec(tmp_path, db, "offload", zero_stage=2, offload=True, total_steps=4, register="toy-offload",
                                       ckpt_storage=(tmp_path / "uri-storage").as_uri()))  # storage given as a file:// URI
    assert list((tmp_path / "uri-storage" / "offload").glob("checkpoint_*/state"))
    mv = mlflow.MlflowClient(tracking_uri=db).get_model_version_by_alias("toy-offload", "current")
    assert done["registered"] == f"models:/toy-offload/{mv.version}"
    history = mlflow.MlflowClient(tracking_uri=db).get_metric_history(done["mlflow_run_id"], "loss")
    assert len(history) == 2 and history[-1].value < history[0].value


def test_a_nan_loss_stops_the_run_names_the_step_and_registers_nothing(db, tmp_path):
    import mlflow

    with pytest.raises(NonFiniteLoss, match=r"step 3 on rank\(s\) \[0\]"):
        train_and_register(toy_spec(tmp_path, db, "nan", inject_fault="nan:3", register="toy-nan"))
    client = mlflow.MlflowClient(tracking_uri=db)
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_registered_model("toy-nan")
    run = client.search_runs([client.get_experiment_by_name("toy-train").experiment_id], "tags.ray_train_run = 'nan'")[0]
    assert run.info.status == "FAILED" and "step 3" in run.data.tags["failure"]
    # the checkpoint at step 2 is the last one: nothing non-finite was saved
    saved = sorted(p for p in (tmp_path / "runs" / "nan").glob("checkpoint_*") if p.is_dir())
    assert len(saved) == 1


def test_an_mlflow_outage_mid_run_does_not_stop_training(tmp_path):
    import mlflow

    from pipeline.services import init_ray

    init_ray(None, 4, progress=False)
    port = 5079
    uri = f"http://127.0.0.1:{port}"
    server = [start_mlflow(tmp_path / "mlflow", port)]
    outage: dict[str, float] = {}

    def take_it_down_and_back():  # once step 2 is logged: down for ~8 s of a ~12-step run, then back
        client = mlflow.MlflowClient(tracking_uri=uri)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                runs = client.search_runs([client.get_experiment_by_name("toy-train").experiment_id])
                if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
                    break
            except Exception:  # noqa: BLE001 - the experiment may not exist yet
                pass
            time.sleep(0.5)
        stop(server[0])
        outage["down"] = time.time()
        time.sleep(8)
        server[0] = start_mlflow(tmp_path / "mlflow", port)
        outage["up"] = time.time()

    helper = threading.Thread(target=take_it_down_and_back, daemon=True)
    helper.start()
    try:
        done = train_and_register(toy_spec(tmp_path, uri, "outage", task=ToyTask(step_sleep=1.0), total_steps=16, log_every=1,
                                           ckpt_every=4, register="toy-outage"))
        helper.join(timeout=120)
        assert outage.get("down") and outage.get("up"), outage
        client = mlflow.MlflowClient(tracking_uri=uri)
        steps = sorted(m.step for m in client.get_metric_history(done["mlflow_run_id"], "loss"))
        assert steps == list(range(1, 17)), steps  # queued while the server was away, sent when it was back
        assert done["mlflow_delivery"]["mlflow_metrics_dropped"] == 0 and done["mlflow_delivery"]["mlflow_failed_calls"] >= 1
        assert client.get_model_version_by_alias("toy-outage", "current").run_id == done["mlflow_run_id"]
    finally:
        stop(server[0])


def test_a_stopped_run_is_marked_killed_not_left_running(db, tmp_path, monkeypatch):
    """SIGTERM (`ray job stop`) becomes SystemExit in every job (pipeline.cli); the run says KILLED."""
    import mlflow

    import pipeline.train.run as run_module
    from pipeline.cli import stop_on_sigterm

    def stopped(spec, name):
        os.kill(os.getpid(), signal.SIGTERM)  # what `ray job stop` sends the driver
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the job")

    monkeypatch.setattr(run_module, "fit", stopped)
    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()  # what every job's entry point does (pipeline.cli.run_job)
        with pytest.raises(SystemExit) as stop:
            train_and_register(toy_spec(tmp_path, db, "stopped"))
    finally:
        signal.signal(signal.SIGTERM, before)
    assert stop.value.code == 128 + signal.SIGTERM
    client = mlflow.MlflowClient(tracking_uri=db)
    run = client.search_runs([client.get_experiment_by_name("toy-train").experiment_id], "tags.ray_train_run = 'stopped'")[0]
    assert run.info.status == "KILLED"
