"""Train a Spleeter 2-stem (vocals / accompaniment) model from stems, log it to MLflow and
register it, so a corpus owner with stems, or without internet, has separator weights.

Input: a manifest (CSV) with ``mix_path, vocals_path, accompaniment_path`` (any format and
rate; relative to the manifest), or a folder of stems: ``<name>.mix|vocals|accompaniment.<ext>``
side by side, or one subfolder per song with ``mixture|vocals|accompaniment.<ext>`` (MUSDB).
Every stem is decoded to 44.1 kHz stereo WAV, the last ``validation_songs`` songs are held
out for Spleeter's validation, and ``spleeter train`` runs in the Spleeter environment with
our libsndfile audio adapter (no ffmpeg).
Spleeter's CLI exits 0 even when training failed, so success is the checkpoint on disk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from pipeline.audio import AudioError, decode
from pipeline.config import ConfigError, field, flatten
from pipeline.services import RUNS_HELP


@dataclass
class TrainSeparatorConfig:
    input: str = field("", "manifest CSV (mix_path, vocals_path, accompaniment_path) or a folder of stems")
    output: str = field("", "model folder to create (params.json + checkpoint)")
    steps: int = field(300, "training steps", ge=1)
    learning_rate: float = field(1e-3, "Adam learning rate", ge=None, gt=0)
    batch_size: int = field(2, "chunks per step", ge=1)
    frame_length: int = field(1024, "STFT window (Spleeter's pretrained models use 4096)")
    frame_step: int = field(256, "STFT hop")
    T: int = field(64, "frames per training patch (multiple of 64)")
    F: int = field(256, "frequency bins modelled (multiple of 64, <= frame_length / 2 + 1)")
    chunk_duration: float = field(3.0, "seconds per training chunk", ge=None, gt=0)
    chunks_per_song: int = field(2, "chunks drawn per song per epoch", ge=1)
    filters: list[int] = field([4, 8, 16, 32, 64, 128], "U-Net encoder widths: 1.2 M parameters (Spleeter's own: 16 ... 512, 19.6 M)")
    validation_songs: int = field(1, "songs held out for validation (0: validate on the training songs)")
    seed: int = field(3, "random seed")
    spleeter_python: str = field("", "Spleeter environment's python (default: $JUKEBOX_SPLEETER_PYTHON, else .venv-spleeter/bin/python)")
    mlflow_tracking_uri: str | None = field(None, "default: $MLFLOW_TRACKING_URI, else sqlite in " + RUNS_HELP)
    experiment: str = field("jukebox-separator", "MLflow experiment")
    register: str = field("jukebox-separator", "registered model name ('' to skip registration)")
    alias: str = field("current", "alias set on the new version; preprocessing takes models:/<name>@<alias>")

    def validate(self) -> None:
        if not self.input or not self.output:
            raise ConfigError("--input and --output are required")
        if self.T % 64 or self.F % 64 or self.F > self.frame_length // 2 + 1:
            raise ConfigError("T and F must be multiples of 64 and F <= frame_length / 2 + 1 (Spleeter's U-Net)")
        if self.T * self.frame_step / 44100 > self.chunk_duration:
            raise ConfigError("T frames must fit in chunk_duration")
        if self.steps < 1:
            raise ConfigError("steps must be >= 1")


NEEDED = ("mix_path", "vocals_path", "accompaniment_path")


def find_stems(folder: Path) -> list[dict[str, str]]:
    """Stem triples in a folder: <name>.mix.<ext> + .vocals + .accompaniment, or MUSDB-style subfolders."""
    rows = []
    for mix in sorted(folder.rglob("*")):
        if not mix.is_file():
            continue
        if mix.name.split(".")[-2:-1] == ["mix"]:  # <name>.mix.<ext>
            base = mix.name[: -len(".mix" + mix.suffix)]
            others = {k: sorted(mix.parent.glob(f"{base}.{k}.*")) for k in ("vocals", "accompaniment")}
        elif mix.stem == "mixture":  # <song>/mixture.<ext>
            others = {k: sorted(mix.parent.glob(f"{k}.*")) for k in ("vocals", "accompaniment")}
        else:
            continue
        if all(others.values()):
            rows.append({"mix_path": str(mix), "vocals_path": str(others["vocals"][0]),
                         "accompaniment_path": str(others["accompaniment"][0])})
    if not rows:
        raise ConfigError(f"{folder}: no stems found (<name>.mix.wav + .vocals + .accompaniment, or <song>/mixture.wav + ...)")
    return rows


def _prepare_data(cfg: TrainSeparatorConfig, data: Path) -> tuple[list[dict], list[dict], str]:
    manifest = Path(cfg.input).resolve()
    if manifest.is_dir():
        rows = find_stems(manifest)  # absolute paths
    else:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    if not rows or any(k not in rows[0] for k in NEEDED):
        raise ConfigError(f"{manifest}: needs the columns {NEEDED}")
    data.mkdir(parents=True, exist_ok=True)
    prepared = []
    for i, row in enumerate(rows):
        stems = {}
        for key in NEEDED:
            path = Path(row[key]) if Path(row[key]).is_absolute() else manifest.parent / row[key]
            try:
                stems[key.split("_")[0]] = decode(path, 1.0, 3600.0).samples
            except (AudioError, OSError) as exc:
                raise ConfigError(f"{manifest} row {i + 1}, {key}: {exc}") from None
        n = min(len(s) for s in stems.values())
        for name, samples in stems.items():
            sf.write(data / f"{i:05d}.{name}.wav", samples[:n], 44100, subtype="PCM_16")
        prepared.append({"mix_path": f"{i:05d}.mix.wav", "vocals_path": f"{i:05d}.vocals.wav",
                         "accompaniment_path": f"{i:05d}.accompaniment.wav", "duration": round(n / 44100, 3)})
    short = [p for p in prepared if p["duration"] < max(cfg.chunk_duration, 12.0)]
    if short:  # Spleeter's validation reads fixed 12 s chunks
        raise ConfigError(f"{len(short)} song(s) shorter than 12 s; Spleeter's training needs longer songs")
    held = min(cfg.validation_songs, len(prepared) - 1)
    train, valid = (prepared[:-held], prepared[-held:]) if held > 0 else (prepared, prepared)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return train, valid, digest


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _params(cfg: TrainSeparatorConfig, model_dir: Path, data: Path) -> dict[str, Any]:
    return {
        "train_csv": str(data / "train.csv"), "validation_csv": str(data / "validation.csv"), "model_dir": str(model_dir),
        "mix_name": "mix", "instrument_list": ["vocals", "accompaniment"], "sample_rate": 44100,
        "frame_length": cfg.frame_length, "frame_step": cfg.frame_step, "T": cfg.T, "F": cfg.F, "n_channels": 2,
        "separation_exponent": 2, "mask_extension": "zeros", "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
        # no cache: a reused cache after a change of T/F/STFT hangs training forever (shared notes)
        "training_cache": None, "validation_cache": None, "train_max_steps": cfg.steps, "throttle_secs": 3600,
        "random_seed": cfg.seed, "save_checkpoints_steps": cfg.steps, "save_summary_steps": max(1, cfg.steps // 20),
        "n_chunks_per_song": cfg.chunks_per_song, "chunk_duration": cfg.chunk_duration,
        "model": {"type": "unet.unet", "params": {"conv_n_filters": list(cfg.filters)}},
    }


def train_separator(cfg: TrainSeparatorConfig) -> dict[str, Any]:
    from pipeline.separate.choose import default_spleeter_python
    from pipeline.separate.spleeter import check_model_folder, checkpoint_step

    python = Path(cfg.spleeter_python or default_spleeter_python())
    if not python.exists():
        raise ConfigError(f"the Spleeter environment is missing ({python}); build it with ./dev.sh spleeter-env")
    final_dir = Path(cfg.output).expanduser().resolve()
    if final_dir.exists() and any(final_dir.iterdir()):
        raise ConfigError(f"{final_dir} is not empty: choose a new folder for the new model")
    # trained in a hidden sibling and renamed when checked: a killed run leaves no folder that
    # passes the model check under --output (a leftover .partial folder is removed by the next run)
    model_dir = final_dir.parent / f".{final_dir.name}.partial"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="separator-data-") as tmp:
        data = Path(tmp)
        train, valid, data_sha = _prepare_data(cfg, data)
        _write_csv(data / "train.csv", train)
        _write_csv(data / "validation.csv", valid)
        params = _params(cfg, model_dir, data)
        params_path = model_dir / "params.json"
        params_path.write_text(json.dumps(params, indent=1))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [str(python.parent / "spleeter"), "train", "-a", "pipeline.separate.spleeter_adapter.SoundfileAudioAdapter",
               "-p", str(params_path), "-d", str(data), "--verbose"]
        log_path = model_dir / "train.log"
        with open(log_path, "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    log_text = log_path.read_text(errors="replace")
    if checkpoint_step(model_dir) != cfg.steps:
        raise RuntimeError(f"Spleeter training produced no step-{cfg.steps} checkpoint; the end of {log_path}:\n{log_text[-3000:]}")
    step = checkpoint_step(model_dir)
    for stale in model_dir.glob("model.ckpt-*"):  # keep the final checkpoint only
        if not stale.name.startswith(f"model.ckpt-{step}."):
            stale.unlink()
    # relative paths, so the folder still loads after a move or a registry download
    (model_dir / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{step}"\n'
                                          f'all_model_checkpoint_paths: "model.ckpt-{step}"\n')
    params["train_csv"] = params["validation_csv"] = ""
    params_path.write_text(json.dumps(params, indent=1))
    check_model_folder(model_dir)
    if final_dir.exists():
        final_dir.rmdir()  # empty (checked above)
    os.replace(model_dir, final_dir)
    model_dir = final_dir
    losses = [(int(s), float(v)) for v, s in re.findall(r"loss = ([0-9.eE+-]+), step = (\d+)", log_text)]
    summary = {"model_dir": str(model_dir), "steps": step, "songs_train": len(train), "songs_validation": len(valid),
               "final_loss": losses[-1][1] if losses else None, "wall_seconds": round(time.time() - started, 1),
               "training_data_sha256": data_sha}
    summary.update(_log_and_register(cfg, model_dir, summary, losses))
    (model_dir / "training_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _log_and_register(cfg: TrainSeparatorConfig, model_dir: Path, summary: dict, losses: list) -> dict[str, Any]:
    from pipeline.registry import folder_digest, register_version
    from pipeline.tracking import TrackedRun, retry

    tags = {"training_data_sha256": summary["training_data_sha256"], "separator": "spleeter-2stems"}
    with TrackedRun.open(cfg.experiment, f"train-separator-{time.strftime('%Y%m%dT%H%M%S')}", cfg.mlflow_tracking_uri,
                         tags=tags) as run:
        run.params(flatten(cfg))
        if losses:
            run.metric_history("train_loss", losses)
        run.metrics({"steps": summary["steps"], "wall_seconds": summary["wall_seconds"]})
        uploaded = [f for f in sorted(model_dir.iterdir()) if f.is_file() and f.name != "train.log"]
        for f in uploaded:
            run.artifact(f, "model")
        run.artifact(model_dir / "train.log")
        out = {"mlflow_run_id": run.run_id}
        if cfg.register:
            card = {"sample_rate": "44100", "stems": "vocals,accompaniment", "steps": str(summary["steps"]),
                    "frame_length": str(cfg.frame_length), "training_data_sha256": summary["training_data_sha256"]}
            source = f"{run.artifact_uri}/model"
            digest = folder_digest(model_dir, uploaded)  # of exactly what went to model/
            out.update(retry("register", lambda: register_version(run.client, cfg.register, source, run.run_id, card, cfg.alias,
                                                                  description="Spleeter 2-stem vocal separator (vocals, accompaniment)",
                                                                  digest=digest)))
    return out
