"""Shared helpers for the benchmarks: corpora, machine-wide CPU accounting, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REALDATA = ROOT.parent / "shared" / "realdata" / "jamendo"


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
    return path


def song_ids() -> list[str]:
    """The three shared songs, in the order of their metadata file."""
    import csv

    with open(REALDATA / "JamendoLyrics.csv", newline="", encoding="utf-8") as fh:
        return [Path(m["Filepath"]).stem for m in csv.DictReader(fh)]


def song_shards(work: Path, name: str, ids: list[str]) -> Path:
    """Shards of some of the three shared songs (their own vocabulary), preprocessed once with
    the linear aligner (alignment does not matter to the benchmarks that use this)."""
    import csv
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from corpus import write_jamendo_manifest

    out = work / f"shards-{name}"
    if not (out / "summary.json").exists():
        full = write_jamendo_manifest(work / "corpus")
        with open(full, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r["id"] in ids]
        manifest = work / f"manifest-{name}.csv"
        with open(manifest, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        subprocess.run([sys.executable, str(ROOT / "jobs" / "preprocess.py"), "--input", str(manifest), "--output", str(out),
                        "--progress", "false", "--align.aligner", "linear", "--mlflow_tracking_uri", f"sqlite:///{work / 'pre.db'}"],
                       check=True, cwd=ROOT, capture_output=True)
    return out


def realdata_work(folder: str, prefix: str) -> Path:
    """The work folder of a benchmark on the shared real songs (a temporary one by default); exits
    when the songs are not there."""
    import sys
    import tempfile

    if not (REALDATA / "JamendoLyrics.csv").exists():
        sys.exit(f"the shared real songs are not at {REALDATA}")
    work = Path(folder or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def apply_sets(data: dict, items: list[str]) -> dict:
    """``--set KEY=VALUE`` flags into a job's config dict: dotted keys, YAML values (``model.width=64``)."""
    import yaml

    for item in items:
        dotted, _, value = item.partition("=")
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return data
