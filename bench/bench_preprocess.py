"""Preprocessing speed: real-time factor per core of each stage and of the whole pipeline,
and the Ray overhead (the Ray Data pipeline vs a plain single-process loop over the same
stage functions), on the demo corpus and on the shared real songs.

Real-time factor per core = audio seconds / CPU-seconds. For the loop, CPU-seconds are
the process's own; for Ray, they are machine-wide busy CPU-seconds during the pipeline
(from /proc/stat: Ray's daemons and idle-spinning count against it), so the overhead
figure is (Ray CPU-s / loop CPU-s - 1). Ray's start-up is reported apart.

    python bench/bench_preprocess.py [--demo-songs 6] [--demo-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from bench.common import REALDATA, save  # noqa: E402
from pipeline.data import shards  # noqa: E402
from pipeline.preprocess.config import PreprocessConfig  # noqa: E402
from pipeline.preprocess.ingest import list_inputs  # noqa: E402
from pipeline.preprocess.run import run_preprocess  # noqa: E402
from pipeline.preprocess.stages import AlignStage, DecodeStage, IngestStage, SeparateStage  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

STAGES = (("ingest", IngestStage), ("decode", DecodeStage), ("separate", SeparateStage), ("align", AlignStage))


def plain_loop(cfg: PreprocessConfig, out: Path) -> dict:
    """The same stage objects, one process, one thread, no Ray: the baseline."""
    torch.set_num_threads(1)
    records = list_inputs(cfg.input)
    stages = [(name, cls(cfg)) for name, cls in STAGES]
    cpu = dict.fromkeys([n for n, _ in STAGES] + ["write"], 0.0)
    rows = []
    for rec in records:
        batch = pa.Table.from_pylist([rec])
        for name, stage in stages:
            t0 = time.process_time()
            batch = stage(batch)
            cpu[name] += time.process_time() - t0
        rows.extend(batch.to_pylist())
    t0 = time.process_time()
    for i in range(0, len(rows), cfg.shards.songs_per_shard):
        shards.write_shard(rows[i:i + cfg.shards.songs_per_shard], out, "loop",
                           shards.ShardLayout(cfg.shards.encoding, cfg.shards.segment_samples, cfg.shards.segments_per_row_group))
    cpu["write"] = time.process_time() - t0
    audio_s = sum(r["duration_s"] for r in rows if r["status"] == "ok")
    return {"audio_seconds": audio_s, "cpu_seconds": cpu, "total_cpu_seconds": sum(cpu.values()),
            "ok": sum(r["status"] == "ok" for r in rows)}


def ray_pipeline(cfg: PreprocessConfig) -> dict:
    """The real job; its summary's phases carry wall and machine-wide CPU per phase."""
    summary = run_preprocess(cfg)
    ph = summary["phases"]
    return {"phases": ph, "audio_seconds": summary["audio_seconds"], "ok": summary["ok"],
            "stream_wall_s": ph["ingest"]["wall_s"] + ph["pipeline"]["wall_s"],
            "stream_cpu_s": ph["ingest"]["machine_cpu_s"] + ph["pipeline"]["machine_cpu_s"]}


def warm_up_ray() -> dict:
    """Ray's one-time costs per job (start, first Ray Data execution), measured apart."""
    import ray

    from pipeline.services import PhaseTimer, init_ray

    phase = PhaseTimer()
    with phase("ray_start"):
        init_ray(None, None, progress=False)
    with phase("first_dataset"):
        ray.data.range(8, override_num_blocks=8).map_batches(lambda b: b).take_all()
    return phase.phases


def corpus_inputs(tmp: Path, demo_songs: int, demo_seconds: float) -> list[tuple[str, str]]:
    from pipeline.demo_corpus import make_demo_corpus

    corpora = [(f"demo {demo_songs}x{demo_seconds:g}s", str(make_demo_corpus(tmp / "demo", songs=demo_songs, seconds=demo_seconds))),
               (f"demo {4 * demo_songs}x{demo_seconds:g}s", str(make_demo_corpus(tmp / "demo4", songs=4 * demo_songs,
                                                                               seconds=demo_seconds, seed=1)))]
    if REALDATA.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from corpus import write_jamendo_manifest

        corpora.append(("jamendo (3 real songs)", str(write_jamendo_manifest(tmp))))
    return corpora


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-songs", type=int, default=6)
    ap.add_argument("--demo-seconds", type=float, default=30.0)
    args = ap.parse_args()
    results, stage_rows, pipe_rows = {}, [], []
    results["ray_warmup"] = warm_up_ray()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, manifest in corpus_inputs(tmp, args.demo_songs, args.demo_seconds):
            base = PreprocessConfig(input=manifest, output=str(tmp / f"{label.replace(' ', '_')}-loop"), progress=False,
                                    mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
            loop = plain_loop(base, Path(base.output))
            cfg = PreprocessConfig(**{**base.__dict__, "output": str(tmp / f"{label.replace(' ', '_')}-ray")})
            ray_res = ray_pipeline(cfg)
            results[label] = {"loop": loop, "ray": ray_res}
            a = loop["audio_seconds"]
            for stage, cpu in loop["cpu_seconds"].items():
                stage_rows.append([label, stage, round(cpu, 2), round(a / cpu, 1) if cpu else "-"])
            overhead = ray_res["stream_cpu_s"] / loop["total_cpu_seconds"] - 1
            results[label]["ray_overhead"] = overhead
            ph = ray_res["phases"]
            pipe_rows.append([label, round(a, 1), round(loop["total_cpu_seconds"], 2), round(a / loop["total_cpu_seconds"], 1),
                              round(ray_res["stream_wall_s"], 2), round(ray_res["stream_cpu_s"], 2),
                              round(a / ray_res["stream_cpu_s"], 1), round(a / ray_res["stream_wall_s"], 1), f"{overhead:+.0%}",
                              round(ph["finish"]["wall_s"], 1)])
    print("\nPer stage (plain loop, 1 thread): real-time factor per core = audio s / CPU s")
    print(format_table(["corpus", "stage", "CPU s", "RTF per core"], stage_rows))
    print("\nWhole pipeline")
    print("Ray columns: ingest + streaming pipeline, CPU = machine-wide busy CPU-s.")
    print("Fixed per job, apart: Ray start and first execution (below), finish (vocab, manifest, MLflow, plots).")
    print(format_table(["corpus", "audio s", "loop CPU s", "loop RTF/core", "Ray wall s", "Ray CPU s",
                        "Ray RTF/core", "Ray RTF (wall)", "Ray overhead", "finish s"], pipe_rows))
    w = results["ray_warmup"]
    print(f"One-time per job: Ray start {w['ray_start']['wall_s']:.1f} s wall / {w['ray_start']['machine_cpu_s']:.1f} CPU-s, "
          f"first Ray Data execution {w['first_dataset']['wall_s']:.1f} s / {w['first_dataset']['machine_cpu_s']:.1f} CPU-s")
    print(save("preprocess", results))


if __name__ == "__main__":
    main()
