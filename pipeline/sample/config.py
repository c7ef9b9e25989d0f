"""``jobs/sample.py``'s config: which models, what to condition on, how to sample, where to write."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from models.levels import UNKNOWN
from models.sampling import SamplingSettings
from pipeline.config import ConfigError, field
from pipeline.services import RUNS_HELP


@dataclass
class ModelsConfig:
    top: str = field("models:/jukebox-prior-top@current", "the top prior")
    middle: str = field("models:/jukebox-prior-middle@current", "the middle upsampler")
    bottom: str = field("models:/jukebox-prior-bottom@current", "the bottom upsampler")
    vqvae_top: str = field("", "top VQ-VAE (default: the one the top prior was trained on, from its card)")
    vqvae_middle: str = field("", "middle VQ-VAE (default: the middle upsampler's, from its card)")
    vqvae_bottom: str = field("", "bottom VQ-VAE (default: the bottom upsampler's, from its card)")

    def prior(self, level: str) -> str:
        return getattr(self, level)

    def vqvae(self, level: str) -> str:
        return getattr(self, f"vqvae_{level}")


@dataclass
class SampleConfig:
    out: str = field("", "output folder; rerunning the same command into it resumes (default: samples/sample in "
                         + RUNS_HELP + ")")
    models: ModelsConfig = dataclasses.field(default_factory=ModelsConfig)
    levels: str = field("top,middle,bottom", "levels to sample, from the top (top; top,middle; or all three)")
    top_codes: str = field("", "upsample-only: top-level codes saved by an earlier run (its codes/top.npy)")
    prime: str = field("", "primed: continue this audio file (decoded, resampled to 44.1 kHz, encoded)")
    prime_seconds: float = field(0.0, "how much of --prime to keep (0 = all of it)")
    artist: str = field(UNKNOWN, "artist name (as in the training corpus)")
    genre: str = field(UNKNOWN, "genre name(s), comma-separated")
    lyrics: str = field("", "lyrics text, or a .txt file (the top prior with lyrics)")
    duration: float = field(20.0, "seconds of audio per sample (exact)", ge=None, gt=0)
    max_duration: float = field(0.0, "refuse a longer --duration (0 = the longest song the priors' timing conditioning was "
                                     "trained for, from their cards)")
    n_samples: int = field(1, "samples in one batch", ge=1, le=256)
    seed: int = field(0, "the same seed gives the same codes")
    temperature: float = field(0.98, "top-level temperature (the paper: 0.98-0.99)", ge=None, gt=0)
    upsample_temperature: float = field(0.99, "upsamplers' temperature", ge=None, gt=0)
    top_k: int = field(0, "keep the k most likely tokens (0 = all)")
    top_p: float = field(0.0, "nucleus sampling: keep this much probability mass (0 = all)", le=1)
    cfg: float = field(0.0, "classifier-free guidance on artist/genre (for priors trained with conditioning dropout; 0 = off)")
    hop_fraction: float = field(0.5, "windows longer than the context advance by this fraction of it", ge=None, gt=0, le=1)
    segment_seconds: float = field(4.0, "upsampling: a level is split into segments of this length, sampled independently "
                                        "(in parallel over --workers); windows inside a segment continue each other")
    workers: int = field(0, "Ray actors for upsampling (each holds the models once); 0 = in this process", le=1024)
    threads: int = field(1, "torch threads per sampler: one-token steps of a small batch are faster on one", ge=1, le=1024)
    compile: str = field("auto", "torch.compile the one-token step: auto (when a level samples >= 2048 tokens), true, false")
    decode_levels: str = field("bottom", "levels to decode to audio (each on its own VQ-VAE): any of top,middle,bottom")
    device: str = field("auto", "auto (a GPU when there is one), cpu or cuda")
    mlflow_tracking_uri: str = field("", "default: $MLFLOW_TRACKING_URI, else sqlite in " + RUNS_HELP)
    experiment: str = field("jukebox-sample", "MLflow experiment")
    ray_address: str = field("", "Ray cluster for --workers (default: $RAY_ADDRESS, else an embedded local Ray)")

    def level_list(self) -> list[str]:
        levels = [x.strip() for x in self.levels.split(",") if x.strip()]
        if levels not in (["top"], ["top", "middle"], ["top", "middle", "bottom"]):
            raise ConfigError(f"levels must be top, top,middle or top,middle,bottom; got {self.levels!r}")
        return levels

    def decode_list(self) -> list[str]:
        out = [x.strip() for x in self.decode_levels.split(",") if x.strip()]
        bad = [x for x in out if x not in self.level_list()]
        if bad:
            raise ConfigError(f"decode_levels {bad} are not sampled (levels: {self.levels})")
        return out

    def genres(self) -> list[str]:
        return [g.strip() for g in self.genre.split(",") if g.strip()] or [UNKNOWN]

    def settings(self, level: str) -> SamplingSettings:
        temp = self.temperature if level == "top" else self.upsample_temperature
        return SamplingSettings(temperature=temp, top_k=self.top_k, top_p=self.top_p, cfg=self.cfg)

    def validate(self) -> None:
        self.level_list()
        self.decode_list()
        if not math.isfinite(self.duration) or self.duration <= 0:
            raise ConfigError(f"duration must be > 0 seconds, got {self.duration}")
        if self.n_samples < 1 or self.workers < 0 or self.threads < 1:
            raise ConfigError("n_samples and threads must be >= 1, workers >= 0")
        if not 0 < self.hop_fraction <= 1:
            raise ConfigError(f"hop_fraction must be in (0, 1], got {self.hop_fraction}")
        if self.segment_seconds <= 0:
            raise ConfigError(f"segment_seconds must be > 0, got {self.segment_seconds}")
        if self.compile not in ("auto", "true", "false"):
            raise ConfigError(f"compile must be auto, true or false; got {self.compile!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda; got {self.device!r}")
        if self.top_codes and self.prime:
            raise ConfigError("--top_codes (upsample only) and --prime (continue audio) exclude each other")
        for name in ("top_codes", "prime"):
            value = getattr(self, name)
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"--{name}: no file at {value}")
        try:
            for level in self.level_list():
                self.settings(level).validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
