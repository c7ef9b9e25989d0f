"""The pipeline job against the same stages run as separate jobs, on the demo corpus.

    python bench/bench_pipeline.py [--work DIR] [--config infra/pipeline/demo.yaml]

One process runs every stage (``jobs/pipeline.py``: one Ray, started once); then a fresh run
folder gets the same stages one process each (``jobs/pipeline.py --only <stage>``: each pays
its own Python start, imports and Ray start, as separate jobs do). Prints both walls and the
time of every stage, and adds the sitting to ``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import save  # noqa: E402
from pipeline.flow.config import STAGES  # noqa: E402
from pipeline.tables import format_table  # noqa: E402


def run(out: Path, config: str, *extra: str) -> tuple[float, list[str]]:
    started = time.time()
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "pipeline.py"), "--config", config, "--input", "demo", "--output",
                           str(out), "--mlflow_tracking_uri", f"sqlite:///{out.parent / (out.name + '.db')}", *extra],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"the pipeline failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.time() - started, (done.stdout + done.stderr).splitlines()


def stage_seconds(out: Path) -> dict[str, float]:
    return {s: e["seconds"] for s, e in json.loads((out / "pipeline.json").read_text())["stages"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="", help="work folder (default: a temporary one)")
    ap.add_argument("--config", default=str(ROOT / "infra" / "pipeline" / "demo.yaml"))
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-pipeline-"))
    one_wall, console = run(work / "one", args.config)
    rerun_wall, _ = run(work / "one", args.config)
    separate = {stage: run(work / "separate", args.config, "--only", stage)[0] for stage in STAGES}
    one, inside = stage_seconds(work / "one"), stage_seconds(work / "separate")
    rows = [[s, f"{one[s]:.1f}", f"{inside[s]:.1f}", f"{separate[s]:.1f}"] for s in STAGES]
    rows.append(["whole", f"{one_wall:.1f}", "", f"{sum(separate.values()):.1f}"])
    print(format_table(["stage", "one job: stage s", "separate: stage s", "separate: process s"], rows))
    print(f"one job {one_wall:.1f} s, separate jobs {sum(separate.values()):.1f} s; a rerun that skips every stage "
          f"{rerun_wall:.1f} s; the one job's console: {len(console)} lines")
    print(save("pipeline", {"config": args.config, "one_job_s": round(one_wall, 1), "separate_jobs_s": round(sum(separate.values()), 1),
                            "rerun_all_skipped_s": round(rerun_wall, 1), "console_lines": len(console),
                            "stage_s_one_job": one, "stage_s_separate": inside,
                            "process_s_separate": {k: round(v, 1) for k, v in separate.items()}}))


if __name__ == "__main__":
    main()
