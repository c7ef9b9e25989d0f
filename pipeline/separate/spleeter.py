"""Spleeter 2-stem separation (Deezer), run inside its own environment.

Spleeter pins TensorFlow 2.12 and numpy 1.x, which clash with torch/ray/mlflow, so it lives
in ``.venv-spleeter/`` (``./dev.sh spleeter-env``) and Ray runs the separation actors with
that interpreter (``runtime_env={"py_executable": ...}``). This module imports nothing
from the main environment's stack: numpy, and spleeter only inside methods.

Model folders are checked before any song is processed. Spleeter itself, given a folder
without a checkpoint, separates with random weights and exits 0; with a relative path or
a ``spleeter:`` name it tries to download. Neither may happen silently here.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from pipeline.separate.base import Separator, Stems


class SeparatorModelError(ValueError):
    """A separator model that cannot be used: raised before the first song."""


def checkpoint_step(folder: Path) -> int:
    steps = [int(m.group(1)) for p in folder.glob("model.ckpt-*.index") if (m := re.match(r"model\.ckpt-(\d+)\.index", p.name))]
    return max(steps) if steps else -1


def check_model_folder(folder: str | Path) -> Path:
    """A usable Spleeter model folder: params.json plus a checkpoint, or a clear error."""
    path = Path(folder).expanduser()
    if not path.is_absolute():
        path = path.resolve()
    if not path.is_dir():
        raise SeparatorModelError(f"separator model folder {path} does not exist")
    if not (path / "params.json").exists():
        raise SeparatorModelError(f"separator model folder {path} has no params.json "
                                  "(train one with jobs/train_separator.py, or point at a Spleeter model folder)")
    if checkpoint_step(path) < 0:
        raise SeparatorModelError(f"separator model folder {path} has no checkpoint (model.ckpt-*.index): "
                                  "Spleeter would separate with random weights")
    try:
        params = json.loads((path / "params.json").read_text())
    except json.JSONDecodeError as exc:
        raise SeparatorModelError(f"{path / 'params.json'} is not JSON: {exc}") from None
    if params.get("instrument_list") != ["vocals", "accompaniment"]:
        raise SeparatorModelError(f"{path}: a 2-stem model (vocals, accompaniment) is needed, "
                                  f"this one has {params.get('instrument_list')}")
    return path


def _resolved_params(folder: Path) -> str:
    """params.json with model_dir pointing at this folder (Spleeter needs it absolute)."""
    params = json.loads((folder / "params.json").read_text())
    params["model_dir"] = str(folder)
    fd, name = tempfile.mkstemp(suffix=".json", prefix="spleeter-params-")
    with os.fdopen(fd, "w") as fh:
        json.dump(params, fh)
    return name


class SpleeterSeparator(Separator):
    name = "spleeter"

    def __init__(self, model: str, version: str = ""):
        self.model = model
        self.version = version or model

    def load(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from spleeter.separator import Separator as _Spleeter

        if self.model.startswith("spleeter:"):
            descriptor = self.model  # pretrained: Spleeter downloads it into $MODEL_PATH once (needs internet)
        else:
            descriptor = _resolved_params(check_model_folder(self.model))
        # multiprocess=False: one model per Ray actor, no fork pool inside it
        self._spleeter = _Spleeter(descriptor, multiprocess=False)

    def separate(self, samples: np.ndarray, sample_rate: int) -> Stems:
        if sample_rate != 44100:
            raise ValueError(f"Spleeter models here run at 44.1 kHz, got {sample_rate}")
        out = self._spleeter.separate(np.ascontiguousarray(samples, dtype=np.float32))
        n = len(samples)
        fit = {k: np.ascontiguousarray(_fit(out[k], n), dtype=np.float32) for k in ("vocals", "accompaniment")}
        return Stems(vocals=fit["vocals"], accompaniment=fit["accompaniment"])


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Spleeter pads to whole STFT frames: trim or pad back to the input's length."""
    return x[:n] if len(x) >= n else np.pad(x, ((0, n - len(x)), (0, 0)))


def preflight(model: str, version: str) -> str:
    """Load the model and separate one second of noise, in the Spleeter environment.

    Run as a Ray task before the pipeline starts, so a corrupt checkpoint is one clear
    error instead of a quarantine row for every song. Plain strings in and out: nothing
    pickled by numpy 2 crosses into numpy 1.
    """
    sep = SpleeterSeparator(model, version)
    sep.load()
    stems = sep.separate(np.random.default_rng(0).uniform(-0.1, 0.1, (44100, 2)).astype(np.float32), 44100)
    if not np.isfinite(stems.vocals).all():
        raise SeparatorModelError(f"{model}: the model produced non-finite output")
    return f"ok {sep.version}"
