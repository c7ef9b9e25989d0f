"""The aligners' interface: what goes in (``AlignInput``), what comes out (``Alignment``), and
the error an aligner raises when it cannot align a song."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from pipeline.separate.activity import VocalActivity

WORD_RE = re.compile(r"\S+")


@dataclass
class AlignInput:
    lyrics: str
    duration_s: float
    sample_rate: int
    language: str | None = None
    mix: np.ndarray | None = None  # (n, 2) float32
    vocals: np.ndarray | None = None  # (n, 2) float32
    vocal_activity: VocalActivity | None = None


@dataclass
class Alignment:
    char_onsets: np.ndarray  # float32, len(lyrics), non-decreasing, within [0, duration]
    word_char_starts: np.ndarray  # int32, index into lyrics where each word starts
    word_onsets: np.ndarray  # float32, one per word
    confidence: float
    method: str
    language: str | None = None  # the language the aligner used, ISO 639-1
    notes: str = ""  # how the language was found; why stronger aligners were skipped


def word_starts(lyrics: str) -> np.ndarray:
    return np.array([m.start() for m in WORD_RE.finditer(lyrics)], dtype=np.int32)


def finish_alignment(lyrics: str, char_onsets: np.ndarray, duration_s: float, confidence: float, method: str) -> Alignment:
    char_onsets = np.clip(np.maximum.accumulate(char_onsets.astype(np.float64)) if char_onsets.size else char_onsets,
                          0.0, duration_s).astype(np.float32)
    starts = word_starts(lyrics)
    return Alignment(char_onsets, starts, char_onsets[starts] if starts.size else np.zeros(0, np.float32),
                     confidence, method)


def char_onsets_from_words(lyrics: str, word_onsets: np.ndarray, duration_s: float) -> np.ndarray:
    """Characters of each word spread between its onset and the next word's (words keep their onset exactly)."""
    starts = word_starts(lyrics)
    n = len(lyrics)
    out = np.zeros(n, dtype=np.float64)
    if starts.size == 0:
        return out
    bounds = np.append(starts, n)
    ends = np.append(word_onsets[1:], min(duration_s, word_onsets[-1] + 0.5))
    out[:starts[0]] = word_onsets[0]
    for w in range(starts.size):
        a, b = bounds[w], bounds[w + 1]
        out[a:b] = word_onsets[w] + (np.arange(b - a) / (b - a)) * max(0.0, ends[w] - word_onsets[w])
    return out


class AlignerUnavailable(RuntimeError):
    """This aligner cannot align this song (missing TTS voice or weights, lyrics the song cannot hold...).

    A fallback chain moves on to the next aligner; a single aligner lets it propagate.
    """


class Aligner(ABC):
    name = "aligner"
    needs_vocals = False  # True: the separation stage must ship the vocal stem to this aligner

    @abstractmethod
    def align(self, item: AlignInput) -> Alignment: ...
