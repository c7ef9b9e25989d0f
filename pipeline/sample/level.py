"""Sampling one level's segment, window by window: what runs in the driver or in a Ray actor.

A *segment* is a span of a level's tokens sampled as one chain of windows (each window keeps the
previous one's last ``n_ctx - hop`` tokens as its context). The top level is one segment; an
upsampled level is cut into fixed-length segments that depend only on the upper level's codes,
so they can run on different workers, and the result does not depend on how many there are.
A segment yields its codes after every window: the caller saves them, and a rerun passes them
back as ``known`` to continue where it stopped. Every window's random numbers are seeded by
(seed, level, window start), so a resumed segment is the same as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from models.sampling import SamplingSettings, TokenSampler, window_starts

COMPILE_FROM_TOKENS = 2048  # --compile auto: a level this long repays the one-off compile (~20 s on a CPU)


@dataclass
class Conditioning:
    artist: int
    genres: list[int]  # padded with -1 to the data's MAX_GENRES
    total_samples: int
    lyrics: str = ""


@dataclass
class Segment:
    level: str
    index: int
    start: int  # first token of the level
    end: int
    known: np.ndarray  # (n_samples, k) the segment's first k tokens: a prompt's codes, or what a killed run saved

    @property
    def finished(self) -> bool:
        return self.known.shape[1] >= self.end - self.start


def window_seed(seed: int, level: str, start: int) -> int:
    return int(hashlib.sha256(f"{seed}:{level}:{start}".encode()).hexdigest()[:15], 16)


class LevelSampler:
    """One prior, loaded once; samples segments of its level."""

    def __init__(self, level: str, prior, settings: SamplingSettings, cond: Conditioning, n_samples: int, seed: int,
                 hop_fraction: float, compile_step: bool, upper: np.ndarray | None = None, ratio: int = 1):
        self.level, self.prior, self.cond, self.n, self.seed = level, prior, cond, n_samples, seed
        self.cfg = prior.cfg
        self.device = next(prior.parameters()).device
        self.hop = window_hop(self.cfg.n_ctx, hop_fraction, ratio)
        self.upper, self.ratio = upper, ratio
        self.sampler = TokenSampler(prior, settings, compile=compile_step)

    def sample(self, segment: Segment) -> Iterator[np.ndarray]:
        """The segment's codes so far (n_samples, tokens), after each window."""
        codes = segment.known.astype(np.int64)
        for ws, we in segment_windows(segment, self.cfg.n_ctx, self.hop, self.ratio):
            known = torch.from_numpy(codes[:, ws:]).to(self.device)
            generator = torch.Generator().manual_seed(window_seed(self.seed, self.level, segment.start + ws))
            batch, _ = window_batch(self.cfg, self.cond, self.n, segment.start + ws, we - ws, self.upper, self.ratio)
            out = self.sampler.window({k: v.to(self.device) for k, v in batch.items()}, known, we - ws, generator)
            codes = np.concatenate([codes, out[:, codes.shape[1] - ws:].cpu().numpy()], axis=1)
            yield codes


def window_batch(cfg, cond: Conditioning, n: int, start: int, length: int, upper: np.ndarray | None = None,
                 ratio: int = 1) -> tuple[dict[str, torch.Tensor], tuple[int, str]]:
    """A prior's conditioning for the window [start, start + length) of its level (on the CPU), and
    the lyrics it reads there: (first character in the song's lyrics, text)."""
    from pipeline.data.lyrics import lyrics_tokens

    full = lambda v: torch.full((n,), v, dtype=torch.long)  # noqa: E731
    batch = {"artist": full(cond.artist), "genres": torch.tensor([cond.genres] * n), "total_length": full(cond.total_samples),
             "offset": full(start * cfg.hop_length)}
    lyrics = (0, "")
    if cfg.lyrics is not None:
        n_chars = cfg.lyrics.encoder.n_ctx
        lyrics = lyrics_for_window(cond.lyrics, start, length, cfg.hop_length, cond.total_samples, n_chars)
        batch["lyrics"] = torch.tensor([lyrics_tokens(lyrics[1], n_chars)] * n)
    if cfg.upsampler is not None:
        batch["upper_codes"] = torch.from_numpy(upper[:, start // ratio:(start + length) // ratio].astype(np.int64))
    return batch, lyrics


def window_hop(n_ctx: int, hop_fraction: float, ratio: int) -> int:
    """Tokens a window advances by: a whole number of upper-level tokens."""
    return max(ratio, int(n_ctx * hop_fraction) // ratio * ratio)


def segment_windows(segment: Segment, n_ctx: int, hop: int, ratio: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the windows left to sample in a segment, relative to its start, one at a time."""
    return window_starts(segment.end - segment.start, n_ctx, hop, segment.known.shape[1], ratio)


def lyrics_for_window(lyrics: str, start: int, length: int, hop: int, total_samples: int, n_chars: int) -> tuple[int, str]:
    """(first character, text) a window conditions on: without an alignment at sampling time the
    characters are spread evenly over the song (the original sampler's heuristic)."""
    from pipeline.data.lyrics_windows import lyrics_window_start

    if not lyrics:
        return 0, ""
    onsets = np.linspace(0.0, total_samples, len(lyrics), endpoint=False)
    lo = lyrics_window_start(lyrics, onsets, start * hop, (start + length) * hop, n_chars)
    return lo, lyrics[lo:lo + n_chars]


class SegmentWorker:
    """A Ray actor's body: the priors of the levels it is asked for, each loaded once."""

    def __init__(self, models: dict[str, str], tracking: str, device: str, threads: int):
        self.models, self.tracking, self.device, self.threads = models, tracking, device, threads
        self.samplers: dict[str, LevelSampler] = {}

    def prepare(self, level: str, settings: SamplingSettings, cond: Conditioning, n_samples: int, seed: int,
                hop_fraction: float, compile_step: bool, upper: np.ndarray | None, ratio: int) -> bool:
        from pipeline.registry import download, instantiate
        from pipeline.services import use_private_compile_cache

        use_private_compile_cache()  # an actor on another node compiles into its own user's folder too
        torch.set_num_threads(self.threads)
        prior = instantiate(download(self.models[level], tracking_uri=self.tracking), self.device)  # downloaded once per machine
        self.samplers[level] = LevelSampler(level, prior, settings, cond, n_samples, seed, hop_fraction, compile_step, upper, ratio)
        return True

    def sample(self, segment: Segment) -> Iterator[np.ndarray]:
        yield from self.samplers[segment.level].sample(segment)
