"""``jobs/pipeline.py``: every stage in order, on one Ray, handing exact versions from stage to stage.

preprocess → VQ-VAE top, middle, bottom → top prior, middle and bottom upsamplers (each
building or reusing its code cache) → sample. Each stage runs the same function as its own
job, with what the pipeline hands it: the shards, and the exact registry versions that its
upstream stage produced in this run (never whatever ``@current`` points to at that moment,
so two pipelines on one registry do not cross). A stage whose config and inputs are the ones
it last finished on is skipped; a training stage killed mid-run continues from its last
checkpoint when the pipeline is run again (its Ray Train run name is a function of the run
folder and its fingerprint). One MLflow parent run per invocation, every stage's run nested
under it; ``<output>/pipeline.json`` lists every stage's inputs and outputs.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from pathlib import Path
from typing import Any

from models import levels
from pipeline.config import ConfigError
from pipeline.flow.config import STAGES, PipelineConfig
from pipeline.flow.state import State, config_fingerprint, digest, tree_fingerprint
from pipeline.tracking import PARENT_ENV, TrackedRun, tracking_uri


class StageFailed(RuntimeError):
    """A stage raised: nothing after it ran."""


def _upstream(stage: str) -> list[str]:
    """The stages whose outputs ``stage`` consumes."""
    group, _, level = stage.partition(".")
    if group == "vqvae":
        return ["preprocess"]
    if group == "prior":
        return ["preprocess", f"vqvae.{level}"] + ([f"vqvae.{levels.upper(level)}"] if level != "top" else [])
    if group == "sample":
        return [f"prior.{lv}" for lv in levels.SAMPLING_ORDER] + [f"vqvae.{lv}" for lv in levels.SAMPLING_ORDER]
    return []


def _inputs(stage: str, cfg: PipelineConfig, state: State, out: Path) -> dict[str, Any]:
    if stage == "preprocess":
        if cfg.input == "demo":
            return {"corpus": "demo"}
        given = Path(cfg.input).expanduser().resolve()  # a manifest: the folder it names its files in
        return {"corpus": tree_fingerprint(given.parent if given.is_file() else given, exclude=out)}
    found = {}
    for up in _upstream(stage):
        outputs = state.outputs(up)
        if outputs is None:
            raise StageFailed(f"{stage} needs {up}, which has not finished in {state.path.parent} (run it, or drop --from/--only)")
        found[up] = outputs
    return found


def _prepare(stage: str, cfg: PipelineConfig, inputs: dict[str, Any], out: Path, uri: str):
    """The stage's own config with what the pipeline hands it."""
    common = {"mlflow_tracking_uri": uri, "experiment": cfg.experiment}
    section = cfg.section(stage)
    group, _, level = stage.partition(".")
    if group == "preprocess":
        demo = cfg.input == "demo"
        return dataclasses.replace(section, input="" if demo else str(Path(cfg.input).expanduser().resolve()), demo=demo,
                                   output=str(out / "shards"), ray_address=cfg.ray_address or None, progress=False, **common)
    if group == "sample":
        from pipeline.sample.config import ModelsConfig

        models = ModelsConfig(**{lv: inputs[f"prior.{lv}"]["model"] for lv in levels.SAMPLING_ORDER},
                              **{f"vqvae_{lv}": inputs[f"vqvae.{lv}"]["model"] for lv in levels.SAMPLING_ORDER})
        return dataclasses.replace(section, models=models, ray_address=cfg.ray_address, **common)
    shards = inputs["preprocess"]["shards"]
    extra = {}
    if group == "prior":
        extra["vqvae"] = inputs[f"vqvae.{level}"]["model"]
        if level != "top":
            extra["upper_vqvae"] = inputs[f"vqvae.{levels.upper(level)}"]["model"]
    return dataclasses.replace(section, level=level, shards=shards, ray_address=cfg.ray_address, **extra, **common)


def _run_stage(stage: str, section, fingerprint: str, out: Path, fresh: bool = False) -> dict[str, Any]:
    group = stage.partition(".")[0]
    if group == "preprocess":
        from pipeline.preprocess.run import run_preprocess

        summary = run_preprocess(section)  # it refuses a run that did not account for every input
        if not summary["songs_total"]:
            raise StageFailed(f"preprocess: no song of {summary['inputs']} input(s) could be used (see {section.output}/quarantine)")
        return {"shards": section.output, "data": summary["manifest_sha256"], "songs": summary["songs_total"],
                "quarantined": summary["quarantined"], "mlflow_run_id": summary.get("mlflow_run_id", "")}
    if group == "sample":
        from pipeline.sample.run import sample

        section = dataclasses.replace(section, out=str(out / "samples" / f"sample-{fingerprint[:10]}"))
        summary = sample(section)
        return {"out": summary["out"], "page": summary["page"], "wavs": summary["wavs"], "mlflow_run_id": summary["mlflow_run_id"]}
    # a training stage: its Ray Train run is named by the run folder and its fingerprint, so a killed stage resumes
    name = f"{stage.replace('.', '-')}-{digest(str(out))[:8]}-{fingerprint[:10]}" + (time.strftime("-%Y%m%d%H%M%S") if fresh else "")
    storage = section.checkpoint.storage or str(out / "checkpoints")
    section = dataclasses.replace(section, checkpoint=dataclasses.replace(section.checkpoint, run_name=name, storage=storage))
    if group == "vqvae":
        from pipeline.train.vqvae_job import train_vqvae

        summary = train_vqvae(section)
    else:
        from pipeline.train.prior_job import train_prior

        summary = train_prior(section)
    return {"model": summary["registered"], "mlflow_run_id": summary["mlflow_run_id"], "steps": summary["steps"],
            **({"code_cache": summary["code_cache"]["code_cache"]} if "code_cache" in summary else {})}


def _what(stage: str, outputs: dict[str, Any]) -> str:
    if stage == "preprocess":
        return f"{outputs['songs']} song(s) in {outputs['shards']} ({outputs['quarantined']} input(s) quarantined)"
    if stage == "sample":
        return f"{outputs['page']}"
    return f"{outputs['model']}"


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    from pipeline.services import init_ray

    started = time.time()
    cfg.validate()
    out = Path(cfg.output).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    selected, state, uri = cfg.selected(), State(out), tracking_uri(cfg.mlflow_tracking_uri or None)
    missing = sorted({up for s in selected for up in _upstream(s) if up not in selected and state.outputs(up) is None})
    if missing:  # before Ray starts: what --from / --only leave out must have run before
        raise ConfigError(f"{', '.join(missing)} must have finished in {out} first (run without --from/--only, or include them)")
    parent = TrackedRun.open(cfg.experiment, f"pipeline-{out.name}", uri, tags={"output": str(out), "stages": ",".join(selected)})
    print(f"pipeline: {', '.join(selected)} into {out} (MLflow run {parent.run_id})", flush=True)
    os.environ[PARENT_ENV] = parent.run_id  # every stage's run is nested under the pipeline's
    timings: dict[str, float] = {}
    try:
        for stage in (s for s in STAGES if s in selected):
            inputs = _inputs(stage, cfg, state, out)
            section = _prepare(stage, cfg, inputs, out, uri)
            fingerprint = digest({"config": config_fingerprint(section), "inputs": inputs})
            done = None if cfg.force else state.done(stage, fingerprint)
            if done is not None:
                print(f"[{stage}] unchanged since its last run: skipped ({_what(stage, done)})", flush=True)
                timings[stage] = 0.0
                continue
            # one Ray for every stage, started (or joined) when the first stage that runs needs it
            init_ray(cfg.ray_address or None, cfg.num_cpus or max(os.cpu_count() or 1, 3), progress=False)
            print(f"[{stage}] started", flush=True)
            t0 = time.time()
            try:
                outputs = _run_stage(stage, section, fingerprint, out, fresh=cfg.force)
            except (KeyboardInterrupt, SystemExit):  # stopped (Ctrl-C, SIGTERM): the same command resumes it
                state.record(stage, fingerprint, "stopped", inputs, {}, time.time() - t0)
                raise
            except Exception as exc:
                log = out / "logs" / f"{stage}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(traceback.format_exc())
                state.record(stage, fingerprint, "failed", inputs, {}, time.time() - t0, f"{type(exc).__name__}: {exc}")
                cause = " ".join(str(exc).split())[:500]  # one line: the console's last says what went wrong
                raise StageFailed(f"stage {stage} failed after {time.time() - t0:.0f} s: {type(exc).__name__}: {cause} "
                                  f"(traceback: {log}); nothing after it ran") from exc
            timings[stage] = round(time.time() - t0, 1)
            state.record(stage, fingerprint, "finished", inputs, outputs, time.time() - t0)
            print(f"[{stage}] done in {timings[stage]:.0f} s: {_what(stage, outputs)}", flush=True)
    except (KeyboardInterrupt, SystemExit):
        parent.finish_quietly("KILLED")
        raise
    except BaseException:
        parent.finish_quietly("FAILED")
        raise
    finally:
        os.environ.pop(PARENT_ENV, None)
    parent.metrics({f"{s}_seconds": v for s, v in timings.items()} | {"wall_seconds": time.time() - started})
    parent.artifact(state.path)
    parent.finish()
    return {"output": str(out), "pipeline": str(state.path), "mlflow_run_id": parent.run_id, "tracking_uri": uri,
            "stage_seconds": timings,
            "wall_seconds": round(time.time() - started, 1), "stages": state.data["stages"]}
