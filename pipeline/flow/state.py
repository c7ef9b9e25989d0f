"""What a pipeline run remembers between invocations: ``<output>/pipeline.json``.

For every stage: the fingerprint of what it ran on (its config, minus what does not change
its result, and its inputs: the corpus's files, the upstream stage's outputs), what it
produced, when, and whether it finished. A rerun skips a stage whose fingerprint is the one
recorded as finished; any change reruns that stage, which changes its outputs and so the
fingerprint of everything after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from pipeline.config import flatten

STATE_FILE = "pipeline.json"
# a section's fields that do not change what a stage makes
VOLATILE = {"ray_address", "num_cpus", "mlflow_tracking_uri", "experiment", "progress", "workers", "threads", "decode_levels"}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def config_fingerprint(section) -> dict[str, Any]:
    return {k: v for k, v in flatten(section).items() if k.split(".")[-1] not in VOLATILE}


def tree_fingerprint(path: Path, exclude: Path | None = None) -> str:
    """The files under ``path`` (or ``path`` itself): names, sizes and modification times, not their bytes;
    nothing under ``exclude`` (a run folder inside the corpus folder)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                 and not (exclude and p.is_relative_to(exclude)))
    return digest([[str(p.relative_to(path.parent if path.is_file() else path)), p.stat().st_size, p.stat().st_mtime_ns]
                   for p in files])


class State:
    """``pipeline.json``, written atomically after every change."""

    def __init__(self, output: Path):
        self.path = Path(output) / STATE_FILE
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}}

    def done(self, stage: str, fingerprint: str) -> dict[str, Any] | None:
        """The outputs of ``stage`` when it finished on exactly this fingerprint, else None."""
        entry = self.data["stages"].get(stage)
        return entry["outputs"] if entry and entry.get("status") == "finished" and entry["fingerprint"] == fingerprint else None

    def outputs(self, stage: str) -> dict[str, Any] | None:
        entry = self.data["stages"].get(stage)
        return entry["outputs"] if entry and entry.get("status") == "finished" else None

    def record(self, stage: str, fingerprint: str, status: str, inputs: dict[str, Any], outputs: dict[str, Any],
               seconds: float, error: str = "") -> None:
        self.data["stages"][stage] = {"status": status, "fingerprint": fingerprint, "inputs": inputs, "outputs": outputs,
                                      "seconds": round(seconds, 1), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                      **({"error": error} if error else {})}
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))  # the stages in the order they first ran
        os.replace(tmp, self.path)
