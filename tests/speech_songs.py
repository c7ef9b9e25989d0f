"""Synthetic songs with known word timings: espeak-ng speech over an accompaniment.

Each lyric line is spoken (slower and higher than the aligner's own synthetic speech, so
the two differ) and placed at a known time, with an instrumental intro, short gaps
between lines and a long instrumental break between the two paragraphs. The
accompaniment (chords and a bass line) is panned wide; the voice sits in the centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SR = 44_100

VERSES = {
    "en": ["the sun goes down over the river", "and we sing a song of home", "the night is long and the road is cold",
           "hold my hand until the morning light", "rain is falling on my window", "every heartbeat calls your name"],
    "es": ["el sol se pone sobre el río", "y cantamos una canción de casa", "la noche es larga y el camino frío",
           "toma mi mano hasta la luz del día"],
}


@dataclass
class SpeechSong:
    mix: np.ndarray  # (n, 2) float32 at 44.1 kHz
    vocals: np.ndarray  # (n, 2)
    lyrics: str
    word_onsets: np.ndarray  # seconds
    language: str

    @property
    def duration_s(self) -> float:
        return len(self.mix) / SR


def speech_song(language: str = "en", lines: list[str] | None = None, seed: int = 0, intro_s: float = 5.0,
                break_s: float = 8.0, rate: int = 110, pitch: int = 75, accompaniment_db: float = -6.0) -> SpeechSong:
    import soxr

    from pipeline.align.tts import Espeak

    lines = lines or VERSES[language]
    rng = np.random.default_rng(seed)
    tts = Espeak()
    half = len(lines) // 2
    placed, onsets, t = [], [], intro_s
    for k, line in enumerate(lines):
        if k == half:
            t += break_s  # an instrumental break between the paragraphs
        sp = tts.synthesize(line, language, line_pause_s=0.0, words_per_minute=rate, pitch=pitch)
        audio = soxr.resample(sp.samples, sp.sample_rate, SR)
        placed.append((int(t * SR), audio))
        onsets += list(t + sp.word_onsets)
        t += len(audio) / SR + rng.uniform(0.4, 1.2)
    n = int((t + 4.0) * SR)
    voice = np.zeros(n, np.float32)
    for start, audio in placed:
        voice[start:start + len(audio)] += audio
    voice /= np.abs(voice).max() + 1e-9
    time = np.arange(n) / SR
    chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
    left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
    bar = 2.0
    for b in range(int(np.ceil(time[-1] / bar))):
        sl = slice(int(b * bar * SR), min(n, int((b + 1) * bar * SR)))
        tt = time[sl] - b * bar
        env = np.exp(-tt * 1.5)
        notes = chords[b % len(chords)]
        left[sl] += sum(np.sin(2 * np.pi * f * time[sl]) for f in notes[:2]) * env * 0.3
        right[sl] += sum(np.sin(2 * np.pi * f * time[sl]) for f in notes[1:]) * env * 0.3
        bass = np.sin(2 * np.pi * notes[0] / 2 * time[sl]) * env * 0.4
        left[sl] += bass
        right[sl] += bass
    gain = 10 ** (accompaniment_db / 20) / (max(np.abs(left).max(), np.abs(right).max()) + 1e-9)
    vocals = np.stack([voice, voice], axis=1) * 0.5
    mix = vocals + np.stack([left, right], axis=1) * gain * 0.5
    lyrics = "\n".join(lines[:half]) + "\n\n" + "\n".join(lines[half:])
    return SpeechSong(mix.astype(np.float32), vocals.astype(np.float32), lyrics, np.array(onsets), language)
