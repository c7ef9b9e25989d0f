"""The data sources of the model families, run in the loader actors (``pipeline.train.loader``).

Nothing here imports torch (or a model): a loader actor is a fresh process, and importing
torch there (1.2 s on an idle core) came before every run's first batch. Batches are numpy
arrays; the worker makes tensors of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.audio_windows import WindowSampler
from pipeline.data.code_cache import CodeCache, split_key
from pipeline.data.lyrics import lyrics_tokens
from pipeline.data.lyrics_windows import LyricsWindows
from pipeline.data.vocab import MAX_GENRES
from pipeline.train.protocol import DataSource


@dataclass
class VQVAEWindows(DataSource):
    """Training windows of the shards (the loader actors' side)."""

    shards: str
    sample_length: int
    data_seed: int = 0
    holdout: float = 0.0

    def open(self) -> None:
        self.sampler = WindowSampler(self.shards, self.sample_length, self.data_seed, span=(0.0, 1.0 - self.holdout))

    def load_batch(self, step: int, micro: int, rank: int, world: int, size: int) -> dict[str, np.ndarray]:
        specs = self.sampler.epoch(step, size * world, stream=micro)[rank * size:(rank + 1) * size]
        return {"audio": self.sampler.load_batch(specs)}


@dataclass
class PriorWindows(DataSource):
    """Context-length windows of one level's codes, with what the prior conditions on.

    ``span`` is the part of every song windows come from (training: the first 1 - holdout of
    each song; evaluation: the rest). Windows of an upsampler start on a multiple of the hop
    ratio, so the upper level's codes for the same audio line up exactly."""

    cache: str
    n_ctx: int
    span: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    upper_cache: str = ""  # upsamplers: the upper level's code cache
    ratio: int = 1  # upper hop / this hop
    shards: str = ""  # for the lyrics windows (top prior with lyrics)
    n_chars: int = 0
    variants: bool = True  # the cache's pitch-shifted songs too (training); False: the songs only (held-out)

    def open(self) -> None:
        self.codes = CodeCache(self.cache)
        self.upper = CodeCache(self.upper_cache) if self.upper_cache else None
        self.lyrics = LyricsWindows(self.shards) if self.n_chars else None
        self.hop = self.codes.hop_length
        first, last, ids = [], [], []
        for sid, song in sorted(self.codes.songs.items()):
            if not self.variants and split_key(sid)[1]:
                continue
            n = len(song.codes)
            lo, hi = int(n * self.span[0]), int(n * self.span[1])
            if self.upper is not None:
                hi = min(hi, len(self.upper.songs[sid].codes) * self.ratio) if sid in self.upper.songs else lo
            if hi - lo >= self.n_ctx:
                ids.append(sid)
                first.append(lo)
                last.append(hi - self.n_ctx)  # the last window start
        if not ids:
            raise ValueError(f"no song of {self.cache} has {self.n_ctx} tokens in the span {self.span}")
        self.song_ids, self.first, self.last = ids, np.array(first), np.array(last)
        room = self.last - self.first + 1
        self.song_p = room / room.sum()

    def windows(self, key: list[int], n: int) -> list[tuple[str, int]]:
        rng = np.random.default_rng(key)
        idx = rng.choice(len(self.song_ids), size=n, p=self.song_p)
        starts = self.first[idx] + (rng.random(n) * (self.last[idx] - self.first[idx] + 1)).astype(np.int64)
        starts -= starts % self.ratio  # upsamplers: aligned with the upper level's tokens
        starts = np.maximum(starts, self.first[idx] + (-self.first[idx]) % self.ratio)
        return [(self.song_ids[i], int(s)) for i, s in zip(idx, starts)]

    def batch(self, windows: list[tuple[str, int]]) -> dict[str, np.ndarray]:
        rows = []
        for sid, start in windows:
            song = self.codes.songs[sid]
            genres = (song.genre_ids + [-1] * MAX_GENRES)[:MAX_GENRES]
            row = {"codes": song.codes[start:start + self.n_ctx], "artist": song.artist_id, "genres": genres,
                   "total_length": song.total_length, "offset": start * self.hop}
            if self.upper is not None:
                up = self.upper.songs[sid].codes
                row["upper_codes"] = up[start // self.ratio:(start + self.n_ctx) // self.ratio]
            if self.lyrics is not None:  # a pitch-shifted song keeps its timing, so its words
                song_id = split_key(sid)[0]
                text = self.lyrics.window(song_id, start * self.hop, self.n_ctx * self.hop) if song_id in self.lyrics.song_ids else ""
                row["lyrics"] = lyrics_tokens(text, self.n_chars)
            rows.append(row)
        return {k: np.asarray([r[k] for r in rows], dtype=np.int64) for k in rows[0]}

    def load_batch(self, step: int, micro: int, rank: int, world: int, size: int) -> dict[str, np.ndarray]:
        specs = self.windows([self.seed, step, micro], size * world)[rank * size:(rank + 1) * size]
        return self.batch(specs)
