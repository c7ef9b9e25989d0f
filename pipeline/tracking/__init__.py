"""MLflow, the same way for every job: where runs go, one way to open and finish a run, and
every driver call waiting out a tracking-server outage.

- ``tracking_uri``: $MLFLOW_TRACKING_URI, else a sqlite store in the runs folder.
- ``experiment_id``: the experiment, made when missing (a local store's artefacts in an
  absolute folder: MLflow's default is relative to the working directory, which differs on
  Ray workers).
- ``retry``: a call that fails because the server cannot be reached is tried again with a
  growing pause (1 s to 30 s) for up to ``JUKEBOX_MLFLOW_OUTAGE_S`` seconds (default 600);
  a call the server refuses fails at once.
- ``TrackedRun``: a run opened (or resumed by a tag), logged to and finished through
  ``retry``. As a context manager it ends FINISHED, FAILED on an error, KILLED on Ctrl-C or
  SIGTERM. The work a job has committed before an outage is never lost to it: the job waits.
- ``MetricsSink`` (``sink.py``): rank 0's background delivery while training runs.

Under the pipeline job every run is opened nested under the pipeline's run (``PARENT_ENV``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipeline.config import check_name
from pipeline.services import runs_dir

T = TypeVar("T")
OUTAGE_ENV = "JUKEBOX_MLFLOW_OUTAGE_S"
PARENT_ENV = "JUKEBOX_MLFLOW_PARENT_RUN_ID"  # set by the pipeline job: every stage's run is nested under its run
PARAM_CHARS = 6000  # MLflow's limit on a parameter value
BATCH_PARAMS = 100  # MLflow's per-call limit on parameters


def tracking_uri(explicit: str | None = None) -> str:
    """$MLFLOW_TRACKING_URI wins over the default, a sqlite store in ``runs_dir()``; ``explicit`` over both."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    runs_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{runs_dir() / 'mlflow.db'}"


def redact(text: str) -> str:
    """Text fit to print or log: the credentials of every URI in it (``scheme://user:password@``) replaced."""
    import re

    return re.sub(r"//[^/@\s'\"]+@", "//***@", str(text))


def client(uri: str | None = None):
    """An ``MlflowClient`` for ``uri`` (tracking and registry alike), never MLflow's global one."""
    import logging

    import mlflow

    # one quick try inside a call: ``retry`` does the waiting and says so, instead of MLflow's silent ~2-minute chain
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    uri = tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def unreachable(exc: BaseException) -> bool:
    """Whether an MLflow call failed because the server could not be reached (worth waiting for), not a bad call."""
    import requests

    return isinstance(exc, (OSError, requests.exceptions.RequestException)) or "API request to" in str(exc)


def outage_deadline() -> float:
    try:
        return max(0.0, float(os.environ.get(OUTAGE_ENV, "600")))
    except ValueError:
        return 600.0


def retry(what: str, fn: Callable[[], T], deadline_s: float | None = None) -> T:
    """``fn()``, tried again while the tracking server is unreachable, up to ``deadline_s`` seconds."""
    deadline = outage_deadline() if deadline_s is None else deadline_s
    pause, started = 1.0, time.time()
    while True:
        try:
            return fn()
        except Exception as exc:
            if not unreachable(exc) or time.time() - started > deadline:
                raise
            print(f"MLflow: {what} failed ({type(exc).__name__}: the server is unreachable); retrying in {pause:.0f} s",
                  flush=True)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)


def experiment_id(name: str, uri: str | None = None) -> str:
    """The id of experiment ``name`` at ``uri``, made when it does not exist."""
    uri = tracking_uri(uri)
    c = client(uri)

    def get_or_create() -> str:
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if uri.startswith(("sqlite:///", "file:")):
            root = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path(uri.removeprefix("file:"))
            location = (root / "mlartifacts" / name).resolve().as_uri()
        return c.create_experiment(name, artifact_location=location)

    return retry(f"open experiment {name}", get_or_create)


class TrackedRun:
    """One MLflow run of a job; every call waits out an outage (``retry``)."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id, self.client = uri, run_id, client(uri)
        self.finished = self.resumed = False

    @classmethod
    def open(cls, experiment: str, name: str, uri: str | None = None, tags: dict[str, str] | None = None,
             resume_tag: tuple[str, str] | None = None) -> TrackedRun:
        """A new run, or, with ``resume_tag`` (key, value), the run that carries that tag marked RUNNING again."""
        uri = tracking_uri(uri)
        exp = experiment_id(experiment, uri)
        c = client(uri)
        tags = dict(tags or {})
        if resume_tag is not None:
            key, value = resume_tag
            check_name(value, "a run key")  # it is pasted into a search filter
            found = retry("find the run to resume",
                          lambda: c.search_runs([exp], filter_string=f"tags.{key} = '{value}'", max_results=1))
            if found:
                run = cls(uri, found[0].info.run_id)
                retry("resume the run", lambda: c.update_run(run.run_id, status="RUNNING"))
                run.resumed = True
                return run
            tags[key] = value
        if os.environ.get(PARENT_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
        created = retry("create a run", lambda: c.create_run(exp, run_name=name, tags=tags))
        return cls(uri, created.info.run_id)

    @property
    def artifact_uri(self) -> str:
        return retry("read the run", lambda: self.client.get_run(self.run_id)).info.artifact_uri

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(v)[:PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), BATCH_PARAMS):  # one call per hundred, not one per value
            retry("log parameters", lambda chunk=items[i:i + BATCH_PARAMS]: self.client.log_batch(self.run_id, params=chunk))

    def metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_metrics([Metric(k, float(v), now, step) for k, v in metrics.items()])

    def metric_history(self, name: str, values: list[tuple[int, float]]) -> None:
        """One metric's (step, value) pairs, in batched calls."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_metrics([Metric(name, float(v), now, s) for s, v in values])

    def _log_metrics(self, items: list) -> None:
        for i in range(0, len(items), 1000):  # MLflow's per-call limit
            retry("log metrics", lambda chunk=items[i:i + 1000]: self.client.log_batch(self.run_id, metrics=chunk))

    def tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, redact(v)[:5000]) for k, v in tags.items()]
        if items:
            retry("set tags", lambda: self.client.log_batch(self.run_id, tags=items))

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        retry(f"upload {Path(path).name}", lambda: self.client.log_artifact(self.run_id, str(path), folder))

    def artifacts(self, local_dir: str | Path, folder: str | None = None) -> None:
        retry(f"upload {Path(local_dir).name}/", lambda: self.client.log_artifacts(self.run_id, str(local_dir), folder))

    def finish(self, status: str = "FINISHED") -> None:
        retry(f"mark the run {status}", lambda: self.client.set_terminated(self.run_id, status))
        self.finished = True

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if self.finished:
            return
        if kind is None:
            self.finish("FINISHED")
        elif issubclass(kind, (KeyboardInterrupt, SystemExit)):
            self.finish_quietly("KILLED")
        else:
            self.finish_quietly("FAILED")

    def finish_quietly(self, status: str) -> None:
        """Mark the run, briefly: the error that ends the job must surface, not an outage behind it."""
        try:
            retry(f"mark the run {status}", lambda: self.client.set_terminated(self.run_id, status), deadline_s=10)
            self.finished = True
        except Exception as exc:  # noqa: BLE001 - the job's own error is the one to show
            print(f"MLflow: could not mark run {self.run_id} {status} ({type(exc).__name__})", flush=True)


__all__ = ["PARENT_ENV", "TrackedRun", "client", "experiment_id", "outage_deadline", "redact", "retry", "tracking_uri", "unreachable"]
