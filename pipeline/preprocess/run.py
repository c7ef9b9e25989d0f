"""The preprocessing job: corpus -> Parquet shards, with nothing lost and nothing twice.

Pass 1 (Ray Data): stat, check and hash every input, read its lyrics. The driver then
decides, with the output's current state, what is new: a song whose content hash is
already in ``songs/`` or an input quarantined before and unchanged since is skipped;
the second copy of the same content in one run is quarantined as a duplicate.
Pass 2 (Ray Data, streaming): decode -> separate (actor pool) -> align -> write, each
shard committed as soon as its songs are done.
Every input ends in exactly one of: ok, quarantined, skipped_existing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import ConfigError, flatten
from pipeline.data import shards
from pipeline.data.vocab import update_vocab
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.ingest import iter_inputs
from pipeline.preprocess.plan import INGESTED_SCHEMA, PLAN_SCHEMA, ExistingOutput, Outcomes, Spool, plan, sort_out
from pipeline.preprocess.report import log_run
from pipeline.preprocess.stages import PIPELINE, IngestStage, Stage
from pipeline.separate.choose import choose_separator, preflight
from pipeline.tables import format_table


class OutputLock:
    """One writer per output folder; a lock left by a dead process on this host is taken over."""

    def __init__(self, out: Path):
        self.path = out / ".lock"

    def __enter__(self) -> OutputLock:
        me = f"{socket.gethostname()}:{os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, me.encode())
                os.close(fd)
                return self
            except FileExistsError:
                host, _, pid = self.path.read_text().partition(":")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    self.path.unlink(missing_ok=True)
                    continue
                raise ConfigError(f"{self.path.parent} is being written by {host}:{pid}; "
                                  f"remove {self.path} if that run is gone") from None
        raise ConfigError(f"could not lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _run_task_stage(batch: pa.Table, stage_cls: type[Stage], cfg: PreprocessConfig, crash_dir: str | None) -> pa.Table:
    return stage_cls(cfg, crash_dir=crash_dir)(batch)


def apply_stage(ds, stage_cls: type[Stage], cfg: PreprocessConfig, actors: int = 1, choice=None, crash_dir: str | None = None):
    """A stage onto a Ray Dataset: actor pool if its setup is expensive, else tasks.

    The separation pool runs in the Spleeter environment's interpreter when Spleeter is chosen.
    ``crash_dir``: where rows leave their marks, so that one that kills its workers is quarantined.
    """
    import ray

    common = {"batch_size": stage_cls.batch_size, "batch_format": "pyarrow", "num_cpus": stage_cls.num_cpus}
    if stage_cls.uses_actors:
        common["num_cpus"] = cfg.separate.cpus_per_actor
        if choice is not None and choice.runtime_env:
            common["runtime_env"] = choice.runtime_env
        return ds.map_batches(stage_cls, fn_constructor_kwargs={"cfg": cfg, "choice": choice, "crash_dir": crash_dir},
                              compute=ray.data.ActorPoolStrategy(min_size=actors, max_size=actors), **common)
    return ds.map_batches(_run_task_stage, fn_kwargs={"stage_cls": stage_cls, "cfg": cfg, "crash_dir": crash_dir}, **common)


def _write_batch(batch: pa.Table, out: str, run_id: str, layout: dict[str, Any]) -> pa.Table:
    rows = batch.to_pylist()
    part = shards.write_shard(rows, Path(out), run_id, shards.ShardLayout(**layout))
    keep = ("input_index", "source", "song_id", "status", "stage", "error", "error_kind", "duration_s", "title",
            "vocal_activity_ratio", "alignment_coverage", "alignment_method")
    return pa.Table.from_pylist([{**{k: r.get(k) for k in keep}, "shard": part} for r in rows])


INGEST_BLOCK_ROWS = 256  # rows per ingest task: hashing is cheap, a task is not


def quarantine_config_key(cfg: PreprocessConfig, choice) -> str:
    """The settings an input's fate depends on: change one and every quarantined input is tried again."""
    decisive = {k: flatten(getattr(cfg, k)) for k in ("ingest", "decode", "separate", "align")}
    decisive["separator"] = [choice.name, choice.version] if choice is not None else None
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_preprocess(cfg: PreprocessConfig) -> dict[str, Any]:
    import ray

    from pipeline.services import PhaseTimer, init_ray

    started = time.time()
    phase = PhaseTimer()
    out = Path(cfg.output).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.demo and not cfg.input:
        from pipeline.demo_corpus import make_demo_corpus

        demo = out.parent / "demo_corpus"
        cfg = dataclasses.replace(cfg, input=str(demo / "manifest.csv") if (demo / "manifest.csv").exists()
                                  else str(make_demo_corpus(demo)))
    inputs = iter_inputs(cfg.input, cfg.ingest.max_genre_words, cfg.ingest.confine_to(cfg.input), cfg.ingest.manifest_limits())
    first = next(inputs, None)  # config errors (no input, no audio column) surface before anything is written
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    with OutputLock(out):
        shards.claim_output(out, run_id)  # a killed run's straggling worker commits nothing from now on
        recovered = shards.recover(out)
        choice = choose_separator(cfg.separate, out, cfg.mlflow_tracking_uri)  # model errors before Ray starts
        config_key = quarantine_config_key(cfg, choice)
        work = out / shards.STAGING / f"{run_id}-plan"  # the driver's spools, removed with the staging folder
        outcomes = Outcomes(out / "runs" / f"{run_id}.inputs.parquet")
        layout = {"encoding": cfg.shards.encoding, "segment_samples": cfg.shards.segment_samples,
                  "segments_per_row_group": cfg.shards.segments_per_row_group, "compression": cfg.shards.compression,
                  "config_key": config_key}
        with phase("plan"):
            existing = ExistingOutput(out, config_key)
            to_ingest = Spool(work / "to_ingest", PLAN_SCHEMA, row_group_rows=INGEST_BLOCK_ROWS)
            inputs_seen = plan(itertools.chain([first] if first else [], inputs), existing, to_ingest, outcomes)
        if to_ingest.rows:
            with phase("ray_start"):
                init_ray(cfg.ray_address, cfg.num_cpus, cfg.progress)
        cpus = int(ray.cluster_resources().get("CPU", 1)) if to_ingest.rows else 1
        # Decode is fused into the separator actors by Ray Data; align + write are ~10% of the work,
        # so the pool leaves them ~10% of the CPUs (at least one): a pool holding every CPU would
        # starve them and stall the stream once the object store fills.
        actors = cfg.separate.actors or max(1, int((cpus - max(1, math.ceil(0.1 * cpus))) / cfg.separate.cpus_per_actor))

        with phase("ingest"):
            if to_ingest.rows:  # written by the workers: the hashed rows never pass through this process
                apply_stage(to_ingest.dataset(), IngestStage, cfg).write_parquet(str(work / "ingested"))
            ingested = Spool.written_by_ray(work / "ingested", INGESTED_SCHEMA)
            # a block per song for small runs (the pool spreads them), at most 64 songs for large ones
            pending = Spool(work / "pending", INGESTED_SCHEMA, row_group_rows=max(1, min(64, ingested.rows // 200)))

            def write_quarantined(rows: list[dict[str, Any]]) -> None:
                _write_batch(pa.Table.from_pylist(rows), str(out), run_id, layout)
                outcomes.add(rows)

            sort_out(ingested, existing, pending, write_quarantined, outcomes)
        if pending.rows:
            with phase("separator_preflight"):
                preflight(choice)  # a corrupt model: one clear error before any song is processed
        with phase("pipeline"):
            if pending.rows:
                for batch in build_pipeline(pending.dataset(), cfg, out, run_id, actors, choice,
                                            layout).iter_batches(batch_size=None, batch_format="pyarrow"):
                    outcomes.add(batch.to_pylist())
        shutil.rmtree(out / shards.STAGING, ignore_errors=True)  # every shard of this run is committed
        with phase("finish"):
            summary = _finish(cfg, out, run_id, inputs_seen, outcomes, recovered, started, phase, choice)
    # again, now with the finish phase timed and the MLflow run id
    _atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    _atomic_write(out / "runs" / f"{run_id}.json", json.dumps(summary, indent=1))
    return summary


def build_pipeline(ds, cfg: PreprocessConfig, out: Path, run_id: str, actors: int, choice, layout: dict[str, Any]):
    """decode -> separate -> align -> write, as one streaming Ray Dataset."""
    crash_dir = out / shards.STAGING / f"{run_id}-in-hand"  # removed with the staging folder
    crash_dir.mkdir(parents=True, exist_ok=True)
    for stage_cls in PIPELINE:
        ds = apply_stage(ds, stage_cls, cfg, actors, choice, str(crash_dir))
    return ds.map_batches(_write_batch, batch_size=cfg.shards.songs_per_shard, batch_format="pyarrow",
                          fn_kwargs={"out": str(out), "run_id": run_id, "layout": layout}, num_cpus=1)


def _finish(cfg: PreprocessConfig, out: Path, run_id: str, inputs_seen: int, outcomes: Outcomes, recovered: dict,
            started: float, phase, choice) -> dict[str, Any]:
    outcomes_file = outcomes.close()
    all_songs = list(shards.iter_song_rows(out, ["song_id", "title", "artist", "genres", "duration_s",
                                                 "vocal_activity_ratio", "alignment_coverage", "alignment_method"]))
    vocab_version, vocab = update_vocab(out / "vocab", [s["artist"] for s in all_songs], [s["genres"] for s in all_songs],
                                        cfg.vocab.min_artist_count, cfg.vocab.min_genre_count, run_id)
    parts = shards.committed_parts(out)
    separator = {"name": choice.name, "version": choice.version, "registry": choice.registry}
    manifest = {"parts": parts, "vocab_version": vocab_version, "audio_encoding": cfg.shards.encoding, "separator": separator,
                "segment_samples": cfg.shards.segment_samples, "sample_rate": 44_100}
    manifest_text = json.dumps(manifest, indent=1, sort_keys=True)
    manifest_sha = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    _atomic_write(out / "manifest.json", manifest_text)

    audio_s = outcomes.audio_seconds
    pass2_s = phase.phases["pipeline"]["wall_s"]
    wall = time.time() - started
    counts = outcomes.counts
    summary = {
        "run_id": run_id, "input": str(cfg.input), "output": str(out),
        "inputs": inputs_seen, "ok": counts["ok"], "quarantined": counts["quarantined"], "skipped_existing": counts["skipped_existing"],
        "quarantined_by_stage": dict(outcomes.by_stage),
        "audio_seconds": round(audio_s, 2), "wall_seconds": round(wall, 2), "pipeline_seconds": round(pass2_s, 2),
        "realtime_factor": round(audio_s / pass2_s, 2) if pass2_s > 0 and audio_s else 0.0,
        "songs_total": len(all_songs), "quarantine_total": sum(p["rows"] for p in parts if p["path"].startswith("quarantine/")),
        "vocab_version": vocab_version, "manifest_sha256": manifest_sha, "recovered": recovered, "separator": separator,
        # which aligner each song of this run got (the chain steps down per song; the reasons are in songs/)
        "alignment_methods": dict(outcomes.aligned_by),
    }
    if summary["inputs"] != summary["ok"] + summary["quarantined"] + summary["skipped_existing"]:
        raise RuntimeError(f"reconciliation failed: {summary}")  # would mean a lost input: never hide it
    summary["phases"] = phase.phases
    # The data is committed: record the run before talking to MLflow, so an unreachable
    # tracking server costs the tracking, not the record of what was written.
    (out / "runs").mkdir(exist_ok=True)
    _atomic_write(out / "runs" / f"{run_id}.json", json.dumps(summary, indent=1))
    _atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    summary["mlflow_run_id"] = log_run(cfg, out, summary, manifest_text, vocab, all_songs, outcomes_file)
    print_summary(summary, outcomes.failures)
    return summary


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def print_summary(summary: dict[str, Any], bad: list[dict[str, Any]]) -> None:
    keys = ("inputs", "ok", "quarantined", "skipped_existing", "songs_total", "audio_seconds", "pipeline_seconds", "realtime_factor",
            "alignment_methods")
    print("\n" + format_table(["run " + summary["run_id"], "value"], [[k, summary[k]] for k in keys]))
    if bad:
        print(format_table(["quarantined input", "stage", "reason"],
                           [[Path(r["source"]).name[:40], r["stage"], (r["error"] or "")[:90]] for r in bad]))
        if summary["quarantined"] > len(bad):
            print(f"... and {summary['quarantined'] - len(bad):,} more quarantined inputs (runs/{summary['run_id']}.inputs.parquet)")
    print(f"output: {summary['output']}  (summary.json, songs/, segments/, quarantine/)  mlflow run: {summary.get('mlflow_run_id')}")
