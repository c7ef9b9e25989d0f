"""jobs/pipeline.py end to end on the demo corpus: every stage in order handing exact versions on,
the page plays, a rerun skips every stage, a changed setting reruns that stage and what depends on
it, a stage killed mid-training resumes from its checkpoint, and a failing stage stops the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "pipeline.py"
TINY = ["--config", str(ROOT / "infra" / "pipeline" / "demo.yaml"), "--sample.duration", "1.0"]
for group in ("vqvae", "prior"):
    for level in ("top", "middle", "bottom"):
        TINY += [f"--{group}.{level}.runtime.total_steps", "4", f"--{group}.{level}.runtime.log_every", "2",
                 f"--{group}.{level}.checkpoint.every", "2"]


def pipeline(run: dict, *extra: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(JOB), "--input", str(run["corpus"]), "--output", str(run["out"]),
                           "--mlflow_tracking_uri", run["uri"], *TINY, *extra], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return done


def stages(run: dict) -> dict:
    return json.loads((run["out"] / "pipeline.json").read_text())["stages"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_corpus):
    tmp = tmp_path_factory.mktemp("pipeline")
    run = {"corpus": demo_corpus, "out": tmp / "run", "uri": f"sqlite:///{tmp / 'mlflow.db'}"}
    started = time.time()
    run["first"] = pipeline(run)
    run["first_s"] = time.time() - started
    return run


def test_every_stage_runs_in_order_on_the_versions_of_this_run(run):
    st = stages(run)
    assert list(st) == ["preprocess", "vqvae.top", "vqvae.middle", "vqvae.bottom", "prior.top", "prior.middle", "prior.bottom",
                        "sample"] and all(s["status"] == "finished" for s in st.values())
    client = mlflow.MlflowClient(tracking_uri=run["uri"])
    top = client.get_model_version(*st["prior.top"]["outputs"]["model"].removeprefix("models:/").split("/"))
    assert json.loads(top.tags["lineage"])["vqvae"] == st["vqvae.top"]["outputs"]["model"]  # the exact version, not @current
    middle = client.get_model_version(*st["prior.middle"]["outputs"]["model"].removeprefix("models:/").split("/"))
    assert json.loads(middle.tags["lineage"])["upper_vqvae"] == st["vqvae.top"]["outputs"]["model"]
    sample = st["sample"]["outputs"]
    assert Path(sample["page"]).exists() and all(Path(w).exists() for w in sample["wavs"])
    parent = client.search_runs([client.get_experiment_by_name("jukebox-pipeline").experiment_id],
                                filter_string="tags.stages LIKE 'preprocess%'")[0]
    assert parent.info.status == "FINISHED"
    for name in ("preprocess", "vqvae.top", "prior.bottom", "sample"):
        stage_run = client.get_run(st[name]["outputs"]["mlflow_run_id"])
        assert stage_run.data.tags["mlflow.parentRunId"] == parent.info.run_id, name
    lines = run["first"].stdout.splitlines()
    assert sum(line.startswith("[") and "] done in" in line for line in lines) == 8
    console = (run["first"].stdout + run["first"].stderr).splitlines()
    assert len(console) <= 80, "\n".join(console)  # one line per stage start and end, progress, the odd library line


def test_the_page_plays_in_a_browser(run, tmp_path):
    from browser import Browser, chromium

    if chromium() is None:
        pytest.skip("no chromium (./dev.sh setup installs it)")
    with Browser() as browser:
        browser.open(Path(stages(run)["sample"]["outputs"]["page"]).as_uri())
        state = browser.evaluate("""(async () => {
            const a = document.querySelector('.sample audio');
            await a.play();
            await new Promise(r => setTimeout(r, 300));
            return {time: a.currentTime, error: a.error && a.error.code}; })()""")
    assert state["error"] is None and state["time"] > 0


def test_a_rerun_skips_every_stage(run):
    started = time.time()
    again = pipeline(run)
    seconds = time.time() - started
    skipped = [line for line in again.stdout.splitlines() if "unchanged since its last run: skipped" in line]
    assert len(skipped) == 8 and "started" not in again.stdout, again.stdout
    assert seconds <= 30, seconds


def test_a_changed_setting_reruns_that_stage_and_what_depends_on_it(run):
    before = stages(run)
    changed = pipeline(run, "--vqvae.top.optim.lr", "0.003")
    after = stages(run)
    rerun = {s for s in after if after[s]["fingerprint"] != before[s]["fingerprint"]}
    assert rerun == {"vqvae.top", "prior.top", "prior.middle", "sample"}, changed.stdout
    assert after["vqvae.top"]["outputs"]["model"] != before["vqvae.top"]["outputs"]["model"]
    assert after["vqvae.bottom"]["outputs"] == before["vqvae.bottom"]["outputs"]


def test_a_stage_killed_mid_training_resumes_from_its_checkpoint(run):
    args = [sys.executable, str(JOB), "--input", str(run["corpus"]), "--output", str(run["out"]), "--mlflow_tracking_uri",
            run["uri"], *TINY, "--prior.top.data_seed", "7", "--prior.top.runtime.total_steps", "12", "--until", "prior.top"]
    checkpoints = run["out"] / "checkpoints"
    earlier = {p.name for p in checkpoints.iterdir()}
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600

    def new_checkpointed() -> list[Path]:
        return [p for p in checkpoints.iterdir() if p.name.startswith("prior-top") and p.name not in earlier
                and list(p.glob("checkpoint_*"))]

    while time.time() < deadline and proc.poll() is None and not new_checkpointed():
        time.sleep(0.2)
    assert proc.poll() is None, "the top prior finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the pipeline's driver and its Ray, mid-stage
    proc.wait()
    killed = new_checkpointed()
    resumed = pipeline(run, "--prior.top.data_seed", "7", "--prior.top.runtime.total_steps", "12", "--until", "prior.top")
    assert "[vqvae.top] unchanged" in resumed.stdout and "[prior.top] done" in resumed.stdout
    entry = stages(run)["prior.top"]
    assert entry["status"] == "finished" and entry["outputs"]["steps"] == 12
    client = mlflow.MlflowClient(tracking_uri=run["uri"])
    stage_run = client.get_run(entry["outputs"]["mlflow_run_id"])
    assert stage_run.data.tags["ray_train_run"] in {p.name for p in killed}  # the killed run, continued
    assert max(m.step for m in client.get_metric_history(stage_run.info.run_id, "loss")) == 12


def test_a_failing_stage_stops_what_follows_and_names_itself(run):
    before = stages(run)["sample"]
    failed = pipeline(run, "--only", "prior.bottom,sample", "--force", "--prior.bottom.runtime.inject_fault", "raise:1",
                      "--prior.bottom.runtime.max_failures", "0", check=False)
    assert failed.returncode == 1
    last = [line for line in failed.stderr.strip().splitlines()[-5:] if line.startswith("error: stage prior.bottom failed")]
    assert last and "logs/prior.bottom.log" in last[0] and "injected failure" in last[0], failed.stderr[-2000:]
    st = stages(run)
    assert st["prior.bottom"]["status"] == "failed" and st["sample"] == before  # nothing after it ran


def test_bad_input_exits_2_before_ray_starts(run, tmp_path):
    for extra, message in ((["--only", "nope"], "unknown stage 'nope'"), (["--vqvae.top.bogus", "1"], "unrecognized arguments"),
                           (["--input", str(tmp_path / "missing")], "no such folder or file"),
                           (["--vqvae.top.model.downs_t", "3,3,2"], "hop")):
        done = subprocess.run([sys.executable, str(JOB), "--output", str(tmp_path / "out"), "--input", str(run["corpus"]), *TINY,
                               *extra], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr[-500:])
    assert not (tmp_path / "out").exists()
