"""The hostile-input matrix (issue 13), run through the real preprocessing job: what happened to
each input, with the counts in and out. docs/reliability.md is written from its output.

Builds tests/corpus.py's broken corpus (the demo songs plus every hostile kind the e2e test
checks), runs ``jobs/preprocess.py`` on it, then a rerun, and prints one row per input.

    python bench/hostile_inputs.py [--work /tmp/hostile]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from corpus import make_broken_corpus  # noqa: E402

from bench.common import save  # noqa: E402
from pipeline.data import shards  # noqa: E402
from pipeline.tables import format_table  # noqa: E402


def run(manifest: Path, out: Path, work: Path) -> tuple[dict, float]:
    t0 = time.time()
    subprocess.run([sys.executable, str(ROOT / "jobs" / "preprocess.py"), "--progress", "false", "--input", str(manifest),
                    "--output", str(out), "--decode.max_seconds", "120", "--mlflow_tracking_uri", f"sqlite:///{work / 'm.db'}"],
                   check=True, capture_output=True, cwd=ROOT)
    return json.loads((out / "summary.json").read_text()), time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="", help="folder for the corpus and the output (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="hostile-"))
    shutil.rmtree(work / "corpus", ignore_errors=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    manifest, expected = make_broken_corpus(work / "corpus")
    first, first_s = run(manifest, work / "out", work)
    again, again_s = run(manifest, work / "out", work)
    songs = {Path(r["source"]).name: r for r in shards.read_table(work / "out", shards.SONGS).to_pylist()}
    quarantine = {(Path(r["source"]).name if "#row=" not in r["source"] else "#row"): r
                  for r in shards.read_table(work / "out", shards.QUARANTINE).to_pylist()}
    rows = []
    for name, want in expected.items():
        got = "ok" if name in songs else quarantine[name]["stage"] if name in quarantine else "MISSING"
        reason = quarantine[name]["error"] if name in quarantine else ""
        rows.append({"input": name.encode("unicode_escape").decode(), "expected": want, "outcome": got, "reason": reason,
                     "kind": quarantine[name]["error_kind"] if name in quarantine else ""})
    print(format_table(["input", "expected", "outcome", "kind", "reason"],
                       [[r["input"][:34], r["expected"], r["outcome"], r["kind"], r["reason"][:90]] for r in rows]))
    counts = {k: first[k] for k in ("inputs", "ok", "quarantined", "skipped_existing")}
    rerun = {k: again[k] for k in ("inputs", "ok", "quarantined", "skipped_existing")}
    print(f"first run: {counts} in {first_s:.1f} s; rerun: {rerun} in {again_s:.1f} s")
    print(f"every outcome as expected: {all(r['expected'] == r['outcome'] for r in rows)}")
    save("hostile_inputs", {"first_run": counts, "first_run_s": first_s, "rerun": rerun, "rerun_s": again_s, "inputs": rows})


if __name__ == "__main__":
    main()
