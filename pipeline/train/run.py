"""A training run from start to registry: MLflow run, Ray Train fit, export, model card.

The same for every model family; what differs lives in its ``TrainingTask`` and
``DataSource``. Registered versions carry the card (``TrainingTask.card``) as tags and as a
``card.json`` beside the weights (safetensors, sharded above a size), so a later stage can
check what it loads before work (``pipeline/registry.py``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.config import flatten
from pipeline.registry import CARD_FILE, card_tags, lineage_tags, register_version
from pipeline.train.runtime import TrainSpec, fit, run_name
from pipeline.train.weights import check_against_model, export_safetensors

RUN_TAG = "ray_train_run"
MAX_SHARD_BYTES = 2 * 2 ** 30  # safetensors files of at most 2 GiB (a 5 B prior: ~10 files)


class NonFiniteLoss(RuntimeError):
    """Training stopped on a NaN or infinite loss; nothing was registered."""


def unreachable(exc: BaseException) -> bool:
    """Whether an MLflow call failed because the server could not be reached (worth waiting for), not a bad call."""
    import requests

    return isinstance(exc, (OSError, requests.exceptions.RequestException)) or "API request to" in str(exc)


def _retry(what: str, fn, deadline_s: float = 600.0):
    """The driver's MLflow calls wait out a tracking-server outage (the training it follows is done and checkpointed)."""
    pause, started = 1.0, time.time()
    while True:
        try:
            return fn()
        except Exception as exc:
            if not unreachable(exc) or time.time() - started > deadline_s:
                raise
            print(f"MLflow: {what} failed ({type(exc).__name__}); retrying in {pause:.0f} s", flush=True)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)


def _on_meta(build):
    import torch

    with torch.device("meta"):
        return build()


def _mlflow_run(spec: TrainSpec, name: str, params: dict[str, Any]) -> str:
    """The MLflow run of Ray Train run ``name``: the existing one when a job resumes it, else a new one."""
    import mlflow
    from mlflow.entities import Param

    from pipeline.services import mlflow_experiment

    exp_id = mlflow_experiment(spec.tracking.experiment, spec.tracking.uri)
    client = mlflow.MlflowClient(tracking_uri=spec.tracking.uri)
    found = client.search_runs([exp_id], filter_string=f"tags.{RUN_TAG} = '{name}'", max_results=1)
    if found:  # resumed: a run that was stopped (KILLED) or SIGKILLed (still RUNNING) runs again
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    lineage = spec.task.card().get("lineage", {})
    run = client.create_run(exp_id, run_name=name, tags={RUN_TAG: name, "family": spec.task.name, **lineage_tags(lineage),
                                                         "manifest_sha256": str(lineage.get("manifest_sha256", "")),
                                                         "preprocess_run_id": str(lineage.get("preprocess_run_id", ""))})
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


def train_and_register(spec: TrainSpec, level: str = "") -> dict[str, Any]:
    """Fit (or resume) the run, export its weights, log and register them with the card."""
    import mlflow
    from mlflow.entities import Metric

    for section in (spec.runtime, spec.optim, spec.checkpoint):
        section.validate()
    spec.job_started = spec.job_started or time.time()
    started = time.time()
    name = spec.checkpoint.run_name = run_name(spec.task, spec.checkpoint, level)
    params = {**{f"runtime.{k}": v for k, v in flatten(spec.runtime).items()},
              **{f"optim.{k}": v for k, v in flatten(spec.optim).items()},
              **{f"checkpoint.{k}": v for k, v in flatten(spec.checkpoint).items()}, **spec.task.params()}
    run_id = spec.mlflow_run_id = _mlflow_run(spec, name, params)
    client = mlflow.MlflowClient(tracking_uri=spec.tracking.uri)
    try:
        result, facts = fit(spec, name)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (`ray job stop`; pipeline.cli makes it SystemExit)
        client.set_terminated(run_id, "KILLED")
        print(f"stopped: MLflow run {run_id} marked KILLED; the same --checkpoint.run_name {name} resumes it", flush=True)
        raise
    if result.error:
        _retry("mark the run failed", lambda: client.set_terminated(run_id, "FAILED"))
        raise result.error
    final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and k != "checkpoint_score"}
    if "nonfinite_step" in facts:
        step, ranks = facts["nonfinite_step"], facts["nonfinite_ranks"]
        _retry("record the failure", lambda: (client.set_tag(run_id, "failure", f"non-finite loss at step {step} on rank(s) {ranks}"),
                                                client.set_terminated(run_id, "FAILED")))
        raise NonFiniteLoss(f"the loss became NaN or infinite at step {step} on rank(s) {ranks}; training stopped "
                            f"before checkpointing it and nothing was registered (MLflow run {run_id})")
    card = {**spec.task.card(), "steps": spec.runtime.total_steps, "mlflow_run_id": run_id, "ray_train_run": name}
    with result.checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as tmp:
        index = export_safetensors(Path(folder), Path(tmp), MAX_SHARD_BYTES)
        from pipeline.registry import BUILDERS, build_model

        # the model the card rebuilds (on the meta device: no weights), else the task's own
        check_against_model(index, build_model(card, meta=True) if card.get("family") in BUILDERS else _on_meta(spec.task.build_model),
                            Path(tmp))
        (Path(tmp) / CARD_FILE).write_text(json.dumps(card, indent=1, sort_keys=True))
        _retry("upload the weights", lambda: client.log_artifacts(run_id, tmp, "model"))
        checkpoint_path = result.checkpoint.path
    summary: dict[str, Any] = {"mlflow_run_id": run_id, "ray_train_run": name, "steps": spec.runtime.total_steps,
                               "checkpoint": checkpoint_path, "final_metrics": final,
                               "weights_bytes": index["metadata"]["total_size"], "weights_files": len(set(index["weight_map"].values()))}
    if spec.tracking.register:
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        summary.update(_retry("register", lambda: register_version(client, spec.tracking.register, source, run_id, card_tags(card),
                                                                    spec.tracking.alias)))
    lost = {k: facts[k] for k in ("mlflow_metrics_dropped", "mlflow_uploads_lost", "mlflow_failed_calls") if k in facts}
    summary["mlflow_delivery"] = lost
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, spec.runtime.total_steps) for k, v in {"wall_seconds": time.time() - started, **lost}.items()]
    _retry("finish the run", lambda: (client.log_batch(run_id, metrics=metrics), client.set_terminated(run_id, "FINISHED")))
    summary["wall_seconds"] = round(time.time() - started, 1)
    return summary
