"""Spleeter for real, offline: build its environment, train a small model on synthetic stems,
register it, preprocess with it through Ray's runtime_env, and score it on held-out songs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpus import write_jamendo_manifest

from pipeline.audio import decode
from pipeline.data import shards

pytestmark = [pytest.mark.e2e, pytest.mark.spleeter]
ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / script), *args], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The test suite builds the Spleeter environment (once) and trains a model with the real job."""
    subprocess.run(["bash", str(ROOT / "dev.sh"), "spleeter-env"], check=True, cwd=ROOT, timeout=1800)
    from pipeline.demo_corpus import make_demo_corpus

    tmp = tmp_path_factory.mktemp("spleeter")
    make_demo_corpus(tmp / "stems", songs=5, seconds=20.0, seed=100)
    db = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = run("train_separator.py", "--input", str(tmp / "stems" / "stems_manifest.csv"), "--output", str(tmp / "model"),
               "--mlflow_tracking_uri", db)
    return {"tmp": tmp, "db": db, "model": tmp / "model", "summary": json.loads(proc.stdout[proc.stdout.index("{"):])}


def test_training_registers_a_model_with_its_card(trained):
    import mlflow

    s = trained["summary"]
    assert s["steps"] == 300 and s["registered"] == "models:/jukebox-separator/1" and s["final_loss"] is not None
    client = mlflow.MlflowClient(tracking_uri=trained["db"])
    mv = client.get_model_version_by_alias("jukebox-separator", "current")
    assert str(mv.version) == "1" and mv.tags["sample_rate"] == "44100" and mv.tags["stems"] == "vocals,accompaniment"
    history = client.get_metric_history(s["mlflow_run_id"], "train_loss")
    # Spleeter logs one batch's loss every 10 steps: too noisy over 300 steps to compare ends (0.79 -> 0.82 failed CI
    # once while the model separated well). That it learned is the held-out SI-SDR test below; here: nothing lost.
    assert sorted(m.step for m in history) == list(range(0, 300, 10)) and all(0 < m.value < 10 for m in history)
    assert (trained["model"] / "model.ckpt-300.index").exists() and (trained["model"] / "params.json").exists()


def test_spleeter_vocals_beat_the_mixture_floor_on_held_out_songs(trained):
    from pipeline.separate.evaluate import evaluate

    rows = evaluate(str(trained["model"]), songs=2, seconds=20.0)
    spleeter = [r for r in rows if r["separator"] == "spleeter"]
    assert len(spleeter) == 2
    for r in spleeter:
        assert r["si_sdr_db"] > r["mixture_floor_db"] + 1.0, r


def test_preprocess_with_the_registered_spleeter(trained, tmp_path):
    from pipeline.demo_corpus import make_demo_corpus

    manifest = make_demo_corpus(tmp_path / "corpus", songs=3, seconds=12.0, seed=31)
    (manifest.parent / "audio" / "corrupt.mp3").write_bytes(np.random.default_rng(0).bytes(30_000))
    with open(manifest, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["audio/corrupt.mp3", "x", "pop", "", "corrupt", "", "corrupt"])
    out = tmp_path / "out"
    run("preprocess.py", "--progress", "false", "--input", str(manifest), "--output", str(out),
        "--separate.model", "models:/jukebox-separator@current", "--mlflow_tracking_uri", trained["db"])
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["quarantined"]) == (3, 1)
    assert summary["separator"]["name"] == "spleeter" and summary["separator"]["version"] == "models:/jukebox-separator/1"
    assert json.loads((out / "manifest.json").read_text())["separator"]["registry"]["version"] == "1"
    for song in shards.read_table(out, "songs").to_pylist():
        assert song["separator"] == "spleeter" and song["separator_version"] == "models:/jukebox-separator/1"
        assert song["num_samples"] == len(decode(song["source"], 0, 1e9).samples) and song["sample_rate"] == 44100
        assert 0.0 < song["vocal_activity_ratio"] < 1.0 and len(song["char_onsets"]) == len(song["lyrics"])
    assert shards.read_table(out, "quarantine").to_pylist()[0]["stage"] == "ingest"  # refused from its header, before the hash


@pytest.mark.realdata
def test_real_songs_through_spleeter(trained, realdata, tmp_path):
    out = tmp_path / "out"
    run("preprocess.py", "--progress", "false", "--input", str(write_jamendo_manifest(tmp_path)), "--output", str(out),
        "--separate.model", str(trained["model"]), "--mlflow_tracking_uri", trained["db"])
    songs = shards.read_table(out, "songs").to_pylist()
    assert len(songs) == 3 and all(s["separator"] == "spleeter" for s in songs)
    for s in songs:
        assert s["num_samples"] == len(decode(s["source"], 0, 1e9).samples) and s["vocal_activity_ratio"] > 0


def test_bad_models_fail_before_any_song(trained, tmp_path):
    from pipeline.demo_corpus import make_demo_corpus

    manifest = make_demo_corpus(tmp_path / "corpus", songs=1, seconds=5.0, seed=2)
    corrupt = tmp_path / "corrupt-model"
    shutil.copytree(trained["model"], corrupt)
    for data in corrupt.glob("model.ckpt-*.data-*"):
        data.write_bytes(b"\x00" * 1000)
    (tmp_path / "empty").mkdir()
    cases = {str(tmp_path / "missing"): "does not exist", str(tmp_path / "empty"): "no params.json",
             str(corrupt): "could not be loaded in the Spleeter environment"}
    for i, (model, message) in enumerate(cases.items()):
        out = tmp_path / f"out{i}"
        proc = run("preprocess.py", "--progress", "false", "--input", str(manifest), "--output", str(out),
                   "--separate.model", model, "--mlflow_tracking_uri", trained["db"], expect=2)
        assert message in proc.stderr, proc.stderr[-2000:]
        assert not (out / "songs").exists()  # nothing processed with a bad model
