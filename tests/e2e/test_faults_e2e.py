"""Faults a long shared job meets (issue 13): a worker node lost in the middle of a run.

A local multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes, each
its own raylet and object store, token auth on) runs the real preprocessing job; one worker
node is removed as soon as the first shard is committed, while other songs are in flight on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import shards

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def three_node_cluster():
    from ray.cluster_utils import Cluster

    from pipeline.ray_auth import secure_ray_environment

    secure_ray_environment("cluster")  # token auth on, as for any cluster this project joins
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"})
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def _job(manifest: Path, out: Path, cluster, tmp: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / "preprocess.py"), "--progress", "false", "--input", str(manifest),
                             "--output", str(out), "--ray_address", cluster.address, "--shards.songs_per_shard", "1",
                             "--separate.actors", "2", "--mlflow_tracking_uri", f"sqlite:///{tmp / 'mlflow.db'}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_node_lost_mid_run_loses_and_duplicates_nothing(three_node_cluster, tmp_path):
    from pipeline.demo_corpus import make_demo_corpus

    cluster, workers = three_node_cluster
    manifest = make_demo_corpus(tmp_path / "corpus", songs=8, seconds=8.0, seed=5)
    (manifest.parent / "audio" / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 20)
    with open(manifest, "a", encoding="utf-8") as fh:
        fh.write("audio/corrupt.wav,Broken,noise,,corrupt,,corrupt\n")
    out = tmp_path / "out"
    job = _job(manifest, out, cluster, tmp_path)
    deadline = time.time() + 300
    while job.poll() is None and not list((out / shards.SONGS).glob("*.parquet")) and time.time() < deadline:
        time.sleep(0.1)
    assert job.poll() is None, "the job ended before a node could be lost: " + job.stdout.read()[-3000:]
    cluster.remove_node(workers[0])  # its raylet, object store and every worker process on it die now
    log, _ = job.communicate(timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    if job.returncode != 0:  # the contract: the run, or its rerun, completes
        rerun = _job(manifest, out, cluster, tmp_path)
        log += rerun.communicate(timeout=600)[0]
        assert rerun.returncode == 0, log[-5000:]
    songs = shards.read_table(out, shards.SONGS).to_pylist()
    quarantine = shards.read_table(out, shards.QUARANTINE).to_pylist()
    sources = [r["source"] for r in songs] + [r["source"] for r in quarantine]
    assert len(sources) == len(set(sources)) == 9, log[-5000:]  # every input exactly once
    assert len({r["song_id"] for r in songs}) == 8 and [Path(r["source"]).name for r in quarantine] == ["corrupt.wav"]
    reader = shards.ShardReader(out)  # every committed shard reads back whole
    for row in songs:
        audio = reader.read_window(row["song_id"], 0, row["num_samples"])
        assert audio.shape == (row["num_samples"], 2) and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert summary["inputs"] == 9
    # the lost node had work on it: Ray reported the failure and retried
    assert "dead" in log or "lost" in log, log[-3000:]
    rerun = _job(manifest, out, cluster, tmp_path)
    rerun.communicate(timeout=600)
    again = json.loads((out / "summary.json").read_text())
    assert (again["skipped_existing"], again["ok"], again["quarantined"]) == (9, 0, 0)
