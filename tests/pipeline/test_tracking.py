"""One way to open and finish an MLflow run, and every job waits out a tracking-server outage."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest
from processes import start_mlflow, stop

from pipeline import tracking
from pipeline.tracking import TrackedRun


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_run_ends_finished_failed_or_killed_as_the_job_did(db):
    with TrackedRun.open("t", "ok", db, tags={"job": "test"}) as run:
        run.params({"a": 1, "long": "x" * 7000})
        run.metrics({"m": 2.0}, step=3)
    with pytest.raises(ValueError), TrackedRun.open("t", "bad", db) as failed:
        raise ValueError("the job's own error")
    with pytest.raises(KeyboardInterrupt), TrackedRun.open("t", "stopped", db) as killed:
        raise KeyboardInterrupt
    client = mlflow.MlflowClient(tracking_uri=db)
    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED" and done.data.tags["job"] == "test"
    assert done.data.params["a"] == "1" and len(done.data.params["long"]) == tracking.PARAM_CHARS
    assert done.data.metrics["m"] == 2.0
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(killed.run_id).info.status == "KILLED"


def test_a_run_is_resumed_by_its_key_and_a_quoted_key_is_refused(db):
    first = TrackedRun.open("t", "train", db, resume_tag=("ray_train_run", "vqvae-bottom-1"))
    first.finish("KILLED")
    again = TrackedRun.open("t", "train", db, resume_tag=("ray_train_run", "vqvae-bottom-1"))
    assert again.resumed and again.run_id == first.run_id
    assert mlflow.MlflowClient(tracking_uri=db).get_run(first.run_id).info.status == "RUNNING"
    for hostile in ("x' OR tags.a = 'b", 'x" OR 1=1', "a b", "x\\'", "", "../up", "é"):
        with pytest.raises(ValueError, match="letters, digits"):  # it would reach the search filter unquoted
            TrackedRun.open("t", "train", db, resume_tag=("ray_train_run", hostile))


def test_credentials_in_a_uri_are_never_logged(db):
    secret = "http://alice:s3cr3t@mlflow.example:5000"
    assert tracking.redact(f"cannot reach {secret}/api and ray://bob:pw@head:10001") == \
        "cannot reach http://***@mlflow.example:5000/api and ray://***@head:10001"
    with TrackedRun.open("t", "creds", db) as run:
        run.params({"mlflow_tracking_uri": secret, "ray_address": "ray://bob:pw@head:10001"})
        run.tags({"source": secret})
    data = mlflow.MlflowClient(tracking_uri=db).get_run(run.run_id).data
    assert data.params == {"mlflow_tracking_uri": "http://***@mlflow.example:5000", "ray_address": "ray://***@head:10001"}
    assert data.tags["source"] == "http://***@mlflow.example:5000"


def test_a_job_error_is_printed_without_the_credentials_it_carries(capsys):
    from dataclasses import dataclass

    from pipeline.cli import run_job

    @dataclass
    class Nothing:
        pass

    def fails(cfg):
        raise ConnectionError("API request to http://alice:s3cr3t@mlflow.example:5000/api/2.0 failed")

    assert run_job(Nothing, fails, "", argv=[]) == 1
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "http://***@mlflow.example:5000" in err and "Traceback" in err


def test_a_refused_call_fails_at_once_and_an_outage_is_waited_out_until_the_deadline():
    calls = []

    def refused():
        calls.append(1)
        raise ValueError("RESOURCE_DOES_NOT_EXIST")

    with pytest.raises(ValueError):
        tracking.retry("refused", refused, deadline_s=60)
    assert len(calls) == 1

    def unreachable():
        calls.append(1)
        raise ConnectionError("connection refused")

    started = time.time()
    with pytest.raises(ConnectionError):
        tracking.retry("down", unreachable, deadline_s=2)
    assert 2 <= time.time() - started < 10 and len(calls) >= 3


def test_preprocessing_waits_out_an_mlflow_outage_and_records_its_run(tmp_path, monkeypatch, capsys):
    """Before, preprocessing died on an unreachable server (only training retried): now the job's record
    waits for the server, and lands when it is back."""
    from pipeline.preprocess.config import PreprocessConfig
    from pipeline.preprocess.report import log_run

    port = 5081
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv(tracking.OUTAGE_ENV, "120")
    server: list = []
    up = threading.Thread(target=lambda: (time.sleep(3), server.append(start_mlflow(tmp_path / "mlflow", port))), daemon=True)
    up.start()  # the server comes up only after the job first tries it
    try:
        cfg = PreprocessConfig(mlflow_tracking_uri=uri)
        summary = {"run_id": "r1", "manifest_sha256": "ab", "vocab_version": 1, "separator": {"name": "dsp", "version": "1"},
                   "inputs": 2, "ok": 1, "quarantined": 1, "skipped_existing": 0, "audio_seconds": 12.0, "wall_seconds": 3.0,
                   "pipeline_seconds": 2.0, "realtime_factor": 6.0, "songs_total": 1, "alignment_methods": {"linear": 1}}
        run_id = log_run(cfg, tmp_path, summary, "{}", {"artists": {"unknown": 0}}, [], None)
        up.join(timeout=120)
        assert server, "the server never came up"
        run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["ok"] == 1.0 and run.data.tags["preprocess_run_id"] == "r1"
        assert "the server is unreachable); retrying" in capsys.readouterr().out
    finally:
        up.join(timeout=120)
        for proc in server:
            stop(proc)


def test_the_registry_waits_out_an_outage_and_never_takes_it_for_a_missing_model(monkeypatch):
    """What sampling and the priors' upstream check do first: resolve a model. An unreachable server is
    retried; a model that is not there is a RegistryError at once."""
    from pipeline import registry

    calls = {"n": 0}

    class Flaky:
        tracking_uri = "http://127.0.0.1:1"

        def get_model_version_by_alias(self, name, alias):
            calls["n"] += 1
            if calls["n"] < 3:
                raise ConnectionError("connection refused")
            if name == "missing":
                raise ValueError("RESOURCE_DOES_NOT_EXIST: no such model")
            return f"{name}@{alias}"

    monkeypatch.setattr(registry, "client", lambda uri=None: Flaky())
    assert registry.resolve("models:/jukebox-prior-top@current") == "jukebox-prior-top@current" and calls["n"] == 3
    calls["n"] = 2
    with pytest.raises(registry.RegistryError, match="not in the registry"):
        registry.resolve("models:/missing@current")
