"""End to end: the real job (`python jobs/preprocess.py`), real Ray, real MLflow (sqlite)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from corpus import HOSTILE_REASONS, make_broken_corpus, write_jamendo_manifest
from processes import all_loopback, listening_addresses

from pipeline.audio import decode
from pipeline.data import shards

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "preprocess.py"


def run_job(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(JOB), "--progress", "false", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def table(out: Path, sub: str) -> list[dict]:
    t = shards.read_table(out, sub)
    return t.to_pylist() if t is not None else []


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("broken")
    manifest, expected = make_broken_corpus(tmp / "corpus")
    out, db = tmp / "out", f"sqlite:///{tmp / 'mlflow.db'}"
    args = ("--input", str(manifest), "--output", str(out), "--decode.max_seconds", "120", "--mlflow_tracking_uri", db)
    first = run_job(*args)
    return {"out": out, "expected": expected, "args": args, "db": db, "first": first, "manifest": manifest}


def test_every_input_is_accounted_for_with_its_reason(broken_run):
    out, expected = broken_run["out"], broken_run["expected"]
    summary = json.loads((out / "summary.json").read_text())
    n_ok = sum(v == "ok" for v in expected.values())
    assert (summary["inputs"], summary["ok"], summary["quarantined"], summary["skipped_existing"]) == \
        (len(expected), n_ok, len(expected) - n_ok, 0)
    quarantine = {Path(r["source"]).name if "#row=" not in r["source"] else "#row": r for r in table(out, "quarantine")}
    for name, outcome in expected.items():
        if outcome != "ok":
            assert quarantine[name]["stage"] == outcome, (name, quarantine.get(name))
    reasons = {k: v["error"] for k, v in quarantine.items()}
    assert "empty file" in reasons["empty.wav"] and "text, not audio" in reasons["notes.mp3"]
    assert "unsupported format .mid" in reasons["song.mid"] and "too long" in reasons["too_long.wav"]
    assert "not found" in reasons["missing.wav"] and "duplicate content" in reasons[next(k for k in reasons if k.startswith("copy_of"))]
    assert "not a decodable audio file" in reasons["corrupt.mp3"] and "no audio path" in reasons["#row"]
    assert "not valid UTF-8 (column 'artist')" in reasons["latin1.wav"]
    for name, words in HOSTILE_REASONS.items():
        assert words in reasons[name], (name, reasons[name])
    # the per-input outcome file lists every input exactly once
    outcomes = pq.read_table(out / "runs" / f"{summary['run_id']}.inputs.parquet").to_pylist()
    assert len(outcomes) == len(expected) and len({o["source"] for o in outcomes}) == len(expected)
    assert "quarantined" in broken_run["first"].stdout and "run " in broken_run["first"].stdout  # the summary table


def test_songs_rows_carry_metadata_alignment_and_audio(broken_run):
    out = broken_run["out"]
    songs = {Path(r["source"]).name: r for r in table(out, "songs")}
    assert len({r["song_id"] for r in songs.values()}) == len(songs)
    uni = songs["ünïcödé_sông.flac"]
    assert uni["artist"] == "Sigur Rós & Björk" and "日本語の歌詞" in uni["lyrics"] and uni["mono_source"]
    assert uni["source_sample_rate"] == 22050 and uni["sample_rate"] == 44100 and uni["channels"] == 2
    assert songs["no_lyrics.wav"]["lyrics_missing"] and songs["no_lyrics.wav"]["alignment_method"].startswith("none")
    reader = shards.ShardReader(out)
    for row in songs.values():
        assert len(row["char_onsets"]) == len(row["lyrics"]) and len(row["word_onsets"]) == len(row["lyrics"].split())
        assert np.all(np.diff(row["char_onsets"]) >= 0) and (not row["char_onsets"] or max(row["char_onsets"]) <= row["duration_s"])
        assert row["separator"] == "dsp" and row["audio_encoding"] == "flac" and row["genres"]
        # the stored audio is the decoded source, 16-bit quantised
        src = decode(row["source"], 0, 1e9).samples
        assert row["num_samples"] == len(src)
        offset = len(src) // 3
        window = reader.read_window(row["song_id"], offset, 300_000)
        valid = min(300_000, len(src) - offset)
        assert np.max(np.abs(window[:valid] - src[offset:offset + valid])) <= 1.01 / 32767
    vocab = json.loads(sorted((out / "vocab").glob("vocab-v*.json"))[-1].read_text())
    assert vocab["artists"]["unknown"] == 0 and "sigur rós & björk" in vocab["artists"]


def test_mlflow_run_has_params_metrics_and_report(broken_run):
    import mlflow

    out = broken_run["out"]
    summary = json.loads((out / "summary.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=broken_run["db"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["ok"] == summary["ok"] and run.data.metrics["quarantined"] == summary["quarantined"]
    assert run.data.params["decode.max_seconds"] == "120.0" and run.data.tags["manifest_sha256"] == summary["manifest_sha256"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    for expected in ("summary.json", "manifest.json", "vocab-v1.json", "inputs.parquet", "report/duration_histogram.png",
                     "report/vocal_activity_ratio.png", "report/alignment_coverage.png"):
        assert expected in names, names


def test_rerun_adds_nothing(broken_run):
    out = broken_run["out"]
    before = {sub: sorted(p.name for p in (out / sub).glob("*.parquet")) for sub in ("songs", "segments", "quarantine")}
    run_job(*broken_run["args"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_existing"] == summary["inputs"] and summary["ok"] == summary["quarantined"] == 0
    after = {sub: sorted(p.name for p in (out / sub).glob("*.parquet")) for sub in ("songs", "segments", "quarantine")}
    assert before == after and summary["vocab_version"] == 1


def test_new_inputs_in_a_rerun_are_the_only_work(broken_run, tmp_path):
    """Append a new song and a fixed version of a broken one: only those are processed."""
    import soundfile as sf

    manifest, out = broken_run["manifest"], broken_run["out"]
    t = np.arange(3 * 44100) / 44100
    sf.write(manifest.parent / "audio" / "new_song.wav", np.stack([np.sin(2 * np.pi * 300 * t)] * 2, 1) * 0.2, 44100)
    with open(manifest, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["audio/new_song.wav", "New Artist", "jazz", "", "new", "", "new"])
    run_job(*broken_run["args"])
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["quarantined"], summary["skipped_existing"]) == (1, 0, summary["inputs"] - 1)
    assert summary["vocab_version"] == 2 and summary["songs_total"] == len(table(out, "songs"))


def test_a_song_that_kills_its_worker_is_quarantined_and_the_run_completes(tmp_path):
    """Ray retries a task whose worker died for ever; the stage's marks stop that at the second death."""
    from pipeline.demo_corpus import make_demo_corpus

    manifest = make_demo_corpus(tmp_path / "corpus", songs=3, seconds=6.0, seed=7)
    manifest.write_text(manifest.read_text().replace("Demo song 2", "Kills its worker"), encoding="utf-8")
    out = tmp_path / "out"
    hook = str(Path(__file__).parent / "crash_hook")
    proc = run_job("--input", str(manifest), "--output", str(out), "--mlflow_tracking_uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                   env={"PYTHONPATH": os.pathsep.join(filter(None, [hook, os.environ.get("PYTHONPATH")]))}, timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["quarantined"]) == (2, 1), proc.stdout[-3000:]
    [bad] = table(out, "quarantine")
    assert Path(bad["source"]).stem == "demo_02" and bad["stage"] == "align" and bad["error_kind"] == "internal", bad
    assert "worker process died 2 times" in bad["error"]
    assert not (out / shards.STAGING).exists()  # the marks went with the staging folder


def test_killed_run_leaves_no_partial_shard_and_rerun_completes(tmp_path):
    from pipeline.demo_corpus import make_demo_corpus

    manifest = make_demo_corpus(tmp_path / "corpus", songs=10, seconds=10.0, seed=5)
    out = tmp_path / "out"
    args = [sys.executable, str(JOB), "--progress", "false", "--input", str(manifest), "--output", str(out),
            "--shards.songs_per_shard", "1", "--mlflow_tracking_uri", f"sqlite:///{tmp_path / 'm.db'}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "songs").glob("*.parquet")) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray processes, mid-run
    proc.wait()
    # a Ray worker of the killed run can outlive its driver by seconds and commit one more whole shard:
    # count once the folder has been still for 3 s
    committed, still_since, settle_deadline = -1, time.time(), time.time() + 60
    while time.time() < settle_deadline and time.time() - still_since < 3:
        now = len(list((out / "songs").glob("*.parquet")))
        if now != committed:
            committed, still_since = now, time.time()
        time.sleep(0.2)
    assert 1 <= committed < 10, "the run was not interrupted mid-way; make the corpus bigger"
    for part in (out / "songs").glob("*.parquet"):  # whatever is visible is whole
        assert pq.read_table(part).num_rows == 1
    run_job(*args[2:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_existing"] == committed and summary["ok"] == 10 - committed
    songs = table(out, "songs")
    assert len(songs) == 10 and len({s["song_id"] for s in songs}) == 10
    segment_files = {p.name for p in (out / "segments").glob("*.parquet")}
    assert segment_files == {p.name for p in (out / "songs").glob("*.parquet")}  # no orphan audio
    assert not (out / "_staging").exists()


@pytest.mark.realdata
def test_real_songs_go_through_and_the_default_aligner_meets_its_targets(realdata, tmp_path):
    """The three annotated songs, and a fourth that is one of them (re-encoded) under another
    song's lyrics: that one must come out unsure, fall back to the linear spread and be counted."""
    import soundfile as sf

    from pipeline.align import AlignInput, LinearAligner, low_confidence_fallback
    from pipeline.demo_corpus import write_manifest

    manifest = write_jamendo_manifest(tmp_path)
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    wrong = tmp_path / "wrong_lyrics.flac"  # other bytes, so not a duplicate of the song it holds
    sf.write(wrong, decode(rows[1]["path"], 0, 1e9).samples, 44100)
    rows.append({**rows[1], "path": str(wrong), "lyrics": rows[0]["lyrics"], "language": rows[0]["language"],
                 "title": "wrong lyrics", "id": "wrong_lyrics"})
    manifest = write_manifest(tmp_path / "with_wrong_lyrics.csv", rows)
    out = tmp_path / "out"
    run_job("--input", str(manifest), "--output", str(out), "--mlflow_tracking_uri", f"sqlite:///{tmp_path / 'm.db'}")
    songs = table(out, "songs")
    assert len(songs) == 4
    unsure = [s for s in songs if s["title"] == "wrong lyrics"][0]
    assert low_confidence_fallback(unsure["alignment_method"]) and unsure["alignment_confidence"] < 0.25, unsure["alignment_notes"]
    assert json.loads((out / "summary.json").read_text())["alignment_methods"] == {"tts_dtw": 3, "linear_low_confidence": 1}
    songs.remove(unsure)
    errors = {"tts_dtw": [], "linear": []}
    within = []
    for s in songs:
        stem = Path(s["source"]).stem
        assert abs(s["duration_s"] - decode(s["source"], 0, 1e9).samples.shape[0] / 44100) < 1e-6
        assert s["alignment_method"] == "tts_dtw" and s["alignment_language"] in ("es", "fr", "de"), s["alignment_notes"]
        assert s["alignment_confidence"] >= 0.5, s["alignment_notes"]
        assert "(metadata)" in s["alignment_notes"]
        with open(realdata / "annotations" / "words" / f"{stem}.csv") as fh:
            spans = [(float(r["word_start"]), float(r["word_end"])) for r in csv.DictReader(fh)]
        truth = np.array([a for a, _ in spans])
        # vocal activity against the annotated sung frames: F1 and precision above chance
        active, hop = np.array(s["vocal_activity"]), s["vocal_activity_hop_s"]
        sung = np.zeros_like(active)
        for a, b in spans:
            sung[int(a / hop):int(b / hop) + 1] = True
        precision, recall = (active & sung).sum() / active.sum(), (active & sung).sum() / sung.sum()
        assert 2 * precision * recall / (precision + recall) > 0.6 and precision >= sung.mean(), (stem, precision, recall)
        assert len(s["word_onsets"]) == len(truth)
        linear = LinearAligner().align(AlignInput(s["lyrics"], s["duration_s"], 44100)).word_onsets
        err = np.abs(np.array(s["word_onsets"]) - truth)
        errors["tts_dtw"].append(err.mean())
        errors["linear"].append(np.mean(np.abs(linear - truth)))
        within.append((err <= 0.3).mean())
    # the targets: mean error <= 2 s and no song over 5 s (a fifth of the linear spread's),
    # >= 50 % of word onsets within 0.3 s
    assert np.mean(errors["tts_dtw"]) <= min(2.0, np.mean(errors["linear"]) / 5), errors
    assert max(errors["tts_dtw"]) <= 5.0 and np.mean(within) >= 0.5, (errors, within)


def test_same_files_run_under_ray_job_submit(tmp_path):
    """The contract for clusters: `ray job submit --working-dir . -- python jobs/<job>.py ...`, here
    preprocessing alone, then the pipeline job: preprocessing, a VQ-VAE (2 workers, ZeRO-3) trained on
    its shards and registered, and the top prior on that exact version's codes; then a sample from it,
    on a head started by infra/ray-head.sh: token auth on, token file 0600 and never logged,
    every port on 127.0.0.1, 401 without the token and success with it."""
    from processes import RayHead, job_succeeded

    from pipeline.demo_corpus import make_demo_corpus

    manifest = make_demo_corpus(tmp_path / "corpus", songs=2, seconds=6.0, seed=9)
    head = RayHead(tmp_path, 6391, 8271, 52391)  # agent port: an embedded Ray of this process may hold 52365
    token_file, api = head.token_file, head.api
    env = {**head.env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    try:
        status = head.wait_for_api()
        assert status == 401, f"the job API must refuse a request without the token, answered {status}"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        with_token = urllib.request.Request(f"{api}/api/version", headers={"Authorization": f"Bearer {token}"})
        assert urllib.request.urlopen(with_token, timeout=5).status == 200
        listening = listening_addresses(head.proc.pid)
        assert all_loopback(listening), listening

        def submit(*entrypoint: str, environment: dict = env) -> subprocess.CompletedProcess:
            return head.submit(*entrypoint, environment=environment)

        succeeded = job_succeeded

        # a client without the token (an empty home: no ~/.ray/auth_token either) is refused
        (tmp_path / "stranger").mkdir()
        stranger = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path / "stranger")}
        refused = submit("jobs/preprocess.py", "--help", environment=stranger)
        assert refused.returncode != 0 and "usage:" not in refused.stdout, refused.stdout[-2000:]

        succeeded(submit("jobs/preprocess.py", "--progress", "false", "--input", str(manifest), "--output", str(tmp_path / "out")))
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["ok"] == 2 and summary["inputs"] == 2
        # no --mlflow_tracking_uri (and the client's is not passed): the run is in the head's durable
        # runs folder, not in the job's temporary working dir
        import mlflow

        durable = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'head-runs' / 'mlflow.db'}")
        assert durable.get_run(summary["mlflow_run_id"]).data.metrics["ok"] == 2
        db = f"sqlite:///{tmp_path / 'train.db'}"  # the job runs in the cluster's environment, not this client's
        # the pipeline job on the cluster: preprocessing, the top VQ-VAE, and the top prior on that exact version
        succeeded(submit("jobs/pipeline.py", "--config", "infra/pipeline/demo.yaml", "--input", str(manifest), "--output",
                         str(tmp_path / "run"), "--only", "preprocess,vqvae.top,prior.top", "--mlflow_tracking_uri", db,
                         "--vqvae.top.runtime.workers", "2", "--vqvae.top.runtime.zero_stage", "3", "--vqvae.top.runtime.total_steps",
                         "4", "--vqvae.top.checkpoint.every", "2", "--prior.top.holdout", "0", "--prior.top.runtime.workers", "2",
                         "--prior.top.runtime.total_steps", "2", "--prior.top.checkpoint.every", "2"))
        client = mlflow.MlflowClient(tracking_uri=db)
        mv = client.get_model_version_by_alias("jukebox-vqvae-top", "current")
        assert mv.tags["hop_length"] == "128" and mv.tags["steps"] == "4"
        stages = json.loads((tmp_path / "run" / "pipeline.json").read_text())["stages"]
        assert stages["prior.top"]["inputs"]["vqvae.top"]["model"] == "models:/jukebox-vqvae-top/1"
        prior = client.get_model_version_by_alias("jukebox-prior-top", "current")
        assert prior.tags["vqvae"] == "models:/jukebox-vqvae-top/1" and prior.tags["lyrics"] == "True"
        # and a song from it: the top level sampled and decoded by the cluster
        succeeded(submit("jobs/sample.py", "--levels", "top", "--decode_levels", "top", "--duration", "2", "--lyrics", "la la la",
                         "--out", str(tmp_path / "samples"), "--mlflow_tracking_uri", db))
        import soundfile as sf

        assert sf.info(tmp_path / "samples" / "top" / "sample-0.wav").frames == 2 * 44100
        assert (tmp_path / "samples" / "index.html").exists()
        # the token is in no log: the head's console and every file of its Ray session
        session = re.search(r"(/\S+/session_[\w.-]+)/logs", head.log.read_text())
        logs = [head.log, *(Path(session.group(1)).rglob("*") if session else [])]
        assert session and not [p for p in logs if p.is_file() and token.encode() in p.read_bytes()]
    finally:
        head.stop()


def test_job_logs_to_an_mlflow_server(tmp_path):
    """Cluster mode: MLFLOW_TRACKING_URI names a server started by infra/mlflow-server.sh."""
    import mlflow

    from pipeline.demo_corpus import make_demo_corpus

    manifest = make_demo_corpus(tmp_path / "corpus", songs=1, seconds=5.0, seed=4)
    port = 5077
    server = subprocess.Popen(["bash", str(ROOT / "infra" / "mlflow-server.sh")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "MLFLOW_ROOT": str(tmp_path / "mlflow"), "MLFLOW_PORT": str(port)})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        run_job("--input", str(manifest), "--output", str(tmp_path / "out"), env={"MLFLOW_TRACKING_URI": uri})
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        client = mlflow.MlflowClient(tracking_uri=uri)
        assert client.get_run(summary["mlflow_run_id"]).data.metrics["ok"] == 1
        assert "summary.json" in {a.path for a in client.list_artifacts(summary["mlflow_run_id"])}
        # artefacts went through the server to its own store, not to a path on the client
        assert list((tmp_path / "mlflow" / "artifacts").rglob("summary.json"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_a_100k_row_manifest_is_planned_and_skipped_within_its_memory_bound(broken_run, tmp_path):
    """Every row names a file the output already accounts for (a committed song, or an input
    quarantined for its content): the rerun reads no audio, starts no Ray, and stays under 2 GB."""
    from corpus import write_large_manifest
    from processes import run_with_peak_rss

    out = broken_run["out"]
    # a row refused for its own cells (file_size -1) is not its file's verdict: another row may name that file
    done = [r["source"] for r in table(out, "songs")] + [r["source"] for r in table(out, "quarantine")
                                                         if r["error_kind"] == "input" and r["file_size"] >= 0]
    manifest = write_large_manifest(tmp_path / "manifest.csv", [Path(s) for s in done], 100_000)
    args = [*broken_run["args"]]
    args[args.index("--input") + 1] = str(manifest)
    proc, peak_mb = run_with_peak_rss(JOB, ["--progress", "false", *args], timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["skipped_existing"], summary["ok"], summary["quarantined"]) == (100_000, 100_000, 0, 0)
    assert "ray_start" not in summary["phases"] and peak_mb < 2048, (peak_mb, summary["phases"])
    outcomes = pq.read_table(out / "runs" / f"{summary['run_id']}.inputs.parquet", columns=["status"])
    assert outcomes.num_rows == 100_000 and set(outcomes["status"].to_pylist()) == {"skipped_existing"}
