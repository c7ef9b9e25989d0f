"""A manifest of 10 k, 100 k and 1 M rows through the real preprocessing job: rows per second of
planning, of the ingest pass and of a rerun's skip path, and the driver's peak RSS at each.

Every row names one of five tiny real WAV files in turn, with its own inline lyrics (0-3,000
characters), so a first run commits five songs and quarantines every other row as a duplicate
(each hashed by the ingest stage); the rerun then skips every row from a ``stat``.

    python bench/bench_manifest_scale.py [--rows 10000,100000,1000000] [--work /tmp/manifest-scale]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from corpus import write_large_manifest  # noqa: E402
from processes import run_with_peak_rss  # noqa: E402

from bench.common import save  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

JOB = ROOT / "jobs" / "preprocess.py"


def tiny_songs(folder: Path, n: int = 5) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(2.5 * 22050)) / 22050
    paths = []
    for i in range(n):
        tone = 0.2 * np.sin(2 * np.pi * (220 + 55 * i) * t)
        sf.write(folder / f"tiny_{i}.wav", np.stack([tone, tone * 0.5], 1).astype(np.float32), 22050)
        paths.append(folder / f"tiny_{i}.wav")
    return paths


def one_size(rows: int, work: Path, songs: list[Path]) -> dict:
    case = work / f"rows_{rows}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    t0 = time.time()
    manifest = write_large_manifest(case / "manifest.csv", songs, rows)
    made_s = time.time() - t0
    args = ["--progress", "false", "--input", str(manifest), "--output", str(case / "out"),
            "--mlflow_tracking_uri", f"sqlite:///{case / 'mlflow.db'}"]
    result = {"rows": rows, "manifest_mb": round(manifest.stat().st_size / 2**20, 1), "manifest_write_s": round(made_s, 1)}
    for name in ("first", "rerun"):
        t0 = time.time()
        proc, peak = run_with_peak_rss(JOB, args, timeout=7200)
        wall = time.time() - t0
        if proc.returncode:
            raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-3000:])
        summary = json.loads((case / "out" / "summary.json").read_text())
        ph = summary["phases"]
        result[name] = {"wall_s": round(wall, 1), "peak_rss_mb": round(peak), "ok": summary["ok"],
                        "quarantined": summary["quarantined"], "skipped": summary["skipped_existing"],
                        "plan_rows_per_s": round(rows / ph["plan"]["wall_s"]),
                        "ingest_rows_per_s": round(rows / ph["ingest"]["wall_s"]) if ph["ingest"]["wall_s"] > 0.01 else None,
                        "phases_s": {k: v["wall_s"] for k, v in ph.items()}}
    shutil.rmtree(case, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="10000,100000,1000000")
    ap.add_argument("--work", default="")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="manifest-scale-"))
    songs = tiny_songs(work / "audio")
    results = []
    for rows in (int(x) for x in a.rows.split(",")):
        results.append(one_size(rows, work, songs))
        print(json.dumps(results[-1]), flush=True)
    table = [[f"{r['rows']:,}", r["manifest_mb"], r["first"]["plan_rows_per_s"], r["first"]["ingest_rows_per_s"],
              r["first"]["wall_s"], r["first"]["peak_rss_mb"], r["rerun"]["plan_rows_per_s"], r["rerun"]["wall_s"],
              r["rerun"]["peak_rss_mb"]] for r in results]
    print(format_table(["rows", "manifest MB", "plan rows/s", "ingest rows/s", "first run s", "driver peak MB",
                        "skip rows/s", "rerun s", "rerun peak MB"], table))
    print("saved", save("manifest_scale", {"results": results}))


if __name__ == "__main__":
    main()
