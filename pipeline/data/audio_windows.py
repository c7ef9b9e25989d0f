"""Random training windows from the Parquet shards: the paper's augmentations, reproducible.

A window is a *spec* (song, offset, downmix weight) drawn from a seeded generator, so the
whole stream of examples is a pure function of (seed, epoch): a resumed run re-creates
exactly the windows it has not consumed yet, on any number of workers. Loading a spec
reads only the row groups that hold it (``ShardReader``) and downmixes stereo to mono
with a random weight (left * w + right * (1 - w)), as the paper does.

Offsets are uniform over the song, which is also the paper's "random shift": the same
song is never cut on a fixed grid. Songs are drawn in proportion to their length, so
every second of audio is equally likely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.shards import ShardReader


@dataclass(frozen=True)
class WindowSpec:
    song_id: str
    offset: int
    downmix: float  # weight of the left channel


class WindowSampler:
    def __init__(self, shards: str | Path, sample_length: int, seed: int = 0, min_song_samples: int = 0,
                 span: tuple[float, float] = (0.0, 1.0)):
        """``span``: the part of every song windows come from, as fractions of its length; a
        held-out evaluation set is e.g. (0.8, 1.0) beside training on (0.0, 0.8)."""
        if not 0.0 <= span[0] < span[1] <= 1.0:
            raise ValueError(f"span must satisfy 0 <= start < end <= 1, got {span}")
        self.span = span
        self.shards = Path(shards)
        self.reader = ShardReader(self.shards)
        self.sample_length, self.seed = sample_length, seed
        songs = sorted((sid, s["num_samples"]) for sid, s in self.reader.songs.items() if s["num_samples"] >= min_song_samples)
        if not songs:
            raise ValueError(f"no songs of at least {min_song_samples} samples in {self.shards}")
        self.song_ids = [s for s, _ in songs]
        lengths = np.array([n for _, n in songs], dtype=np.float64) * (span[1] - span[0])
        self.song_p = lengths / lengths.sum()
        self.song_samples = lengths.astype(np.int64)
        self.song_first = (np.array([n for _, n in songs], dtype=np.float64) * span[0]).astype(np.int64)
        self.total_samples = int(lengths.sum())

    def lineage(self) -> dict:
        """What the run was trained on: the shard manifest's hash and the preprocessing run."""
        out = {"shards": str(self.shards.resolve()), "songs": len(self.song_ids), "audio_samples": self.total_samples}
        summary = self.shards / "summary.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            out.update(manifest_sha256=s.get("manifest_sha256", ""), preprocess_run_id=s.get("run_id", ""),
                       preprocess_mlflow_run_id=s.get("mlflow_run_id", ""))
        return out

    def epoch(self, epoch: int, n: int, stream: int = 0) -> list[WindowSpec]:
        """The ``n`` windows of (epoch, stream): the same for the same seed, whoever asks."""
        rng = np.random.default_rng([self.seed, epoch, stream])
        idx = rng.choice(len(self.song_ids), size=n, p=self.song_p)
        offsets = self.song_first[idx] + (rng.random(n) * np.maximum(self.song_samples[idx] - self.sample_length, 1)).astype(np.int64)
        weights = rng.random(n)
        return [WindowSpec(self.song_ids[i], int(o), float(w)) for i, o, w in zip(idx, offsets, weights)]

    def load(self, spec: WindowSpec) -> np.ndarray:
        """(sample_length, 1) float32 mono."""
        stereo = self.reader.read_window(spec.song_id, spec.offset, self.sample_length)
        return (stereo[:, :1] * spec.downmix + stereo[:, 1:] * (1.0 - spec.downmix)).astype(np.float32)

    def load_batch(self, specs: list[WindowSpec]) -> np.ndarray:
        return np.stack([self.load(s) for s in specs])
