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
from pipeline.registry import BUILDERS, CARD_FILE, build_model, card_tags, folder_digest, lineage_tags, register_version
from pipeline.tracking import TrackedRun, redact, retry
from pipeline.train.driver import fit, run_name
from pipeline.train.export import export_safetensors
from pipeline.train.protocol import RunContext, TrainSpec
from pipeline.weights import check_against_model

RUN_TAG = "ray_train_run"
MAX_SHARD_BYTES = 2 * 2 ** 30  # safetensors files of at most 2 GiB (a 5 B prior: ~10 files)


class NonFiniteLoss(RuntimeError):
    """Training stopped on a NaN or infinite loss; nothing was registered."""


def _on_meta(build):
    import torch

    with torch.device("meta"):
        return build()


def open_run(spec: TrainSpec, name: str) -> TrackedRun:
    """The MLflow run of Ray Train run ``name``: the existing one when a job resumes it (marked RUNNING
    again, whether it was stopped or SIGKILLed), else a new one with the config and lineage."""
    lineage = spec.task.card().get("lineage", {})
    tags = {"family": spec.task.name, **lineage_tags(lineage), "manifest_sha256": str(lineage.get("manifest_sha256", "")),
            "preprocess_run_id": str(lineage.get("preprocess_run_id", ""))}
    run = TrackedRun.open(spec.tracking.experiment, name, spec.tracking.uri, tags=tags, resume_tag=(RUN_TAG, name))
    if not run.resumed:
        run.params({**{f"runtime.{k}": v for k, v in flatten(spec.runtime).items()},
                    **{f"optim.{k}": v for k, v in flatten(spec.optim).items()},
                    **{f"checkpoint.{k}": v for k, v in flatten(spec.checkpoint).items()}, **spec.task.params()})
    return run


def train_and_register(spec: TrainSpec, level: str = "", job_started: float = 0.0) -> dict[str, Any]:
    """Fit (or resume) the run, export its weights, log and register them with the card (the spec's
    sections are validated by the job's config)."""
    started = time.time()
    ctx = RunContext(name=run_name(spec.task, spec.checkpoint, level), job_started=job_started or started)
    run = open_run(spec, ctx.name)
    ctx.mlflow_run_id = run.run_id
    print(f"[{ctx.name}] {'resuming' if run.resumed else 'training'} {spec.runtime.total_steps} steps; MLflow run {run.run_id} "
          f"at {redact(spec.tracking.uri)}", flush=True)
    try:
        result, facts = fit(spec, ctx)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (`ray job stop`; pipeline.cli makes it SystemExit)
        run.finish_quietly("KILLED")
        print(f"stopped: MLflow run {run.run_id} marked KILLED; the same --checkpoint.run_name {ctx.name} resumes it", flush=True)
        raise
    if result.error:
        run.finish("FAILED")
        raise result.error
    if "nonfinite_step" in facts:
        step, ranks = facts["nonfinite_step"], facts["nonfinite_ranks"]
        run.tags({"failure": f"non-finite loss at step {step} on rank(s) {ranks}"})
        run.finish("FAILED")
        raise NonFiniteLoss(f"the loss became NaN or infinite at step {step} on rank(s) {ranks}; training stopped "
                            f"before checkpointing it and nothing was registered (MLflow run {run.run_id})")
    summary = _export_and_register(spec, ctx, run, result)
    summary["final_metrics"] = {k: v for k, v in (result.metrics or {}).items()
                                if isinstance(v, (int, float)) and k != "checkpoint_score"}
    lost = {k: facts[k] for k in ("mlflow_metrics_dropped", "mlflow_uploads_lost", "mlflow_failed_calls") if k in facts}
    summary["mlflow_delivery"] = lost
    run.metrics({"wall_seconds": time.time() - started, **lost}, step=spec.runtime.total_steps)
    run.finish("FINISHED")
    summary["wall_seconds"] = round(time.time() - started, 1)
    return summary


def _export_and_register(spec: TrainSpec, ctx: RunContext, run: TrackedRun, result) -> dict[str, Any]:
    card = {**spec.task.card(), "steps": spec.runtime.total_steps, "mlflow_run_id": run.run_id, "ray_train_run": ctx.name}
    with result.checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as tmp:
        index = export_safetensors(Path(folder), Path(tmp), MAX_SHARD_BYTES)
        # the model the card rebuilds (on the meta device: no weights), else the task's own
        model = build_model(card, meta=True) if card.get("family") in BUILDERS else _on_meta(spec.task.build_model)
        check_against_model(index, model, Path(tmp))
        (Path(tmp) / CARD_FILE).write_text(json.dumps(card, indent=1, sort_keys=True))
        digest = folder_digest(Path(tmp))
        run.artifacts(tmp, "model")
    summary: dict[str, Any] = {"mlflow_run_id": run.run_id, "ray_train_run": ctx.name, "steps": spec.runtime.total_steps,
                               "checkpoint": result.checkpoint.path, "weights_bytes": index["metadata"]["total_size"],
                               "weights_files": len(set(index["weight_map"].values()))}
    if spec.tracking.register:
        source = f"{run.artifact_uri}/model"
        summary.update(retry("register", lambda: register_version(run.client, spec.tracking.register, source, run.run_id,
                                                                   card_tags(card), spec.tracking.alias, digest=digest)))
    return summary
