"""A training run from start to registry: MLflow run, Ray Train fit, consolidation, model card.

The same for every model family; what differs lives in its ``TrainingTask``.
Registered versions carry the card (``TrainingTask.card``) as tags (scalars) and as a
``card.json`` next to the weights, so a later stage can check what it loads before work.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.config import flatten
from pipeline.train.runtime import RuntimeConfig, Tracking, TrainingTask, consolidated_state_dict, fit, latest_checkpoint

WEIGHTS_FILE = "model.pt"  # fp32 state dict (torch.save; load with weights_only=True)
CARD_FILE = "card.json"
RUN_TAG = "ray_train_run"


def _mlflow_run(tracking: Tracking, name: str, task: TrainingTask, cfg: RuntimeConfig) -> str:
    """The MLflow run of Ray Train run ``name``: the existing one when a job resumes it, else a new one."""
    import mlflow

    from pipeline.runtime import mlflow_experiment

    exp_id = mlflow_experiment(tracking.experiment, tracking.uri)
    client = mlflow.MlflowClient()
    found = client.search_runs([exp_id], filter_string=f"tags.{RUN_TAG} = '{name}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=name, tags={RUN_TAG: name, "family": task.name})
    params = {**{f"runtime.{k}": v for k, v in flatten(cfg).items()}, **task.params()}
    lineage = task.card().get("lineage", {})
    params.update({f"lineage.{k}": v for k, v in lineage.items()})
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    client.set_tag(run.info.run_id, "manifest_sha256", str(lineage.get("manifest_sha256", "")))
    client.set_tag(run.info.run_id, "preprocess_run_id", str(lineage.get("preprocess_run_id", "")))
    return run.info.run_id


def _card_tags(card: dict[str, Any]) -> dict[str, str]:
    """Scalars as they are; nested parts (config, lineage) as JSON."""
    return {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, tuple)) else str(v))[:5000] for k, v in card.items()}


def train_and_register(task: TrainingTask, cfg: RuntimeConfig, tracking: Tracking) -> dict[str, Any]:
    import mlflow

    cfg.validate()
    cfg.run_name = cfg.run_name or f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.time()
    run_id = _mlflow_run(tracking, cfg.run_name, task, cfg)
    client = mlflow.MlflowClient()
    done, folder = latest_checkpoint(Path(cfg.storage).expanduser().resolve() / cfg.run_name)
    final_metrics: dict[str, Any] = {}
    if done < cfg.total_steps:
        result = fit(task, cfg, tracking, run_id)
        if result.error:
            client.set_terminated(run_id, "FAILED")
            raise result.error
        folder = Path(result.checkpoint.path)
        final_metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    # else: the run had finished training (the job died while registering): register what it trained
    state = consolidated_state_dict(folder)
    model = task.build_model()
    model.load_state_dict(state)  # the consolidated state must be exactly the model's
    card = {**task.card(), "steps": cfg.total_steps, "mlflow_run_id": run_id, "ray_train_run": cfg.run_name}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.state_dict(), Path(tmp) / WEIGHTS_FILE)
        (Path(tmp) / CARD_FILE).write_text(json.dumps(card, indent=1, sort_keys=True))
        client.log_artifacts(run_id, tmp, "model")
    summary: dict[str, Any] = {"mlflow_run_id": run_id, "ray_train_run": cfg.run_name, "steps": cfg.total_steps,
                               "checkpoint": str(folder), "final_metrics": final_metrics}
    if tracking.register:
        from pipeline.runtime import register_version

        summary.update(register_version(client, tracking.register, f"{client.get_run(run_id).info.artifact_uri}/model", run_id,
                                        _card_tags(card), tracking.alias))
    client.log_metric(run_id, "wall_seconds", time.time() - started)
    client.set_terminated(run_id, "FINISHED")
    summary["wall_seconds"] = round(time.time() - started, 1)
    return summary


def load_registered(uri: str, tracking_uri: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and card of ``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""
    import mlflow

    from pipeline.runtime import tracking_uri as resolve

    uri_resolved = resolve(tracking_uri or None)
    client = mlflow.MlflowClient(tracking_uri=uri_resolved)
    name, _, ref = uri.removeprefix("models:/").partition("@")
    if ref:
        mv = client.get_model_version_by_alias(name, ref)
    else:
        name, _, version = uri.removeprefix("models:/").partition("/")
        mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        # not mlflow.artifacts.download_artifacts("models:/..."): it ignores the client's tracking URI
        local = mlflow.artifacts.download_artifacts(client.get_model_version_download_uri(name, mv.version), dst_path=tmp,
                                                    tracking_uri=uri_resolved)
        state = torch.load(Path(local) / WEIGHTS_FILE, weights_only=True)
        card = json.loads((Path(local) / CARD_FILE).read_text())
    return state, card
