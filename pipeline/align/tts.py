"""Offline speech synthesis of lyrics with espeak-ng, with the time each word starts.

We call ``libespeak-ng`` through ctypes rather than the ``espeak-ng`` command because the
library reports a WORD event (character position + sample offset) for every word it
speaks: exact word onsets in the synthetic speech, which the DTW aligner maps onto the
song. The command line only writes audio. Debian/Ubuntu: ``apt-get install espeak-ng``.
The library runs in a fresh helper process per call (``_espeak_worker.py`` says why).

One line of lyrics is synthesised at a time and the lines are joined with a short pause,
so a line break in the lyrics is a pause in the reference (singers breathe there too),
and the onset of every line is known exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.align.base import AlignerUnavailable
from pipeline.align.language import ESPEAK_VOICES, normalise_language

_WORKER = Path(__file__).with_name("_espeak_worker.py")

class TTSUnavailable(AlignerUnavailable):
    """espeak-ng is not installed, or has no voice for the language."""


@dataclass
class Speech:
    samples: np.ndarray  # float32 mono
    sample_rate: int
    word_onsets: np.ndarray  # float64 seconds, one per whitespace-separated word of the text
    line_onsets: np.ndarray  # float64 seconds, one per non-empty line


class Espeak:
    """espeak-ng speech with word onsets; each call speaks in a fresh helper process (``_espeak_worker.py``)."""

    sample_rate = 22050  # espeak-ng's voices; the worker reports the real rate

    @staticmethod
    def voice_for(language: str | None) -> str | None:
        """'French', 'fr', 'fr-FR' -> espeak-ng's voice name, or None when it has none."""
        return ESPEAK_VOICES.get(normalise_language(language) or "")

    def _speak(self, lines: list[str], voice: str, words_per_minute: int, pitch: int) -> list[tuple[np.ndarray, list]]:
        """Per line: int16 samples and WORD events as (byte offset in the UTF-8 line, sample index)."""
        request = json.dumps({"voice": voice, "words_per_minute": words_per_minute, "pitch": pitch, "lines": lines})
        proc = subprocess.run([sys.executable, "-I", "-S", str(_WORKER)], input=request.encode(), capture_output=True,
                              timeout=600)
        if proc.returncode == 3:
            raise TTSUnavailable(proc.stderr.decode(errors="replace").strip())
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng worker failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
        buf = proc.stdout
        end = buf.index(b"\n")
        self.sample_rate = json.loads(buf[:end])["sample_rate"]
        pos, out = end + 1, []
        for _ in lines:
            end = buf.index(b"\n", pos)
            head = json.loads(buf[pos:end])
            pos = end + 1 + 2 * head["samples"]
            out.append((np.frombuffer(buf[end + 1:pos], dtype="<i2"), head["events"]))
        return out

    def synthesize(self, lyrics: str, language: str | None, line_pause_s: float = 0.3,
                   words_per_minute: int = 150, pitch: int = 50) -> Speech:
        voice = self.voice_for(language)
        if voice is None:
            raise TTSUnavailable(f"no espeak-ng voice for language {language!r}")
        pieces, word_onsets, line_onsets = [], [], []
        offset = 0
        texts = [" ".join(line.split()) for line in lyrics.splitlines() if line.split()]
        spoken = self._speak(texts, voice, words_per_minute, pitch) if texts else []
        pause = np.zeros(int(line_pause_s * self.sample_rate), np.int16)
        for text, (audio, events) in zip(texts, spoken):
            words = text.split()
            # byte offset of each word in the UTF-8 text -> the WORD event nearest to it
            starts, pos = [], 0
            for w in words:
                starts.append(len(text[:pos].encode("utf-8")))
                pos += len(w) + 1
            ev_pos = np.array([p for p, _ in events], dtype=np.int64)
            ev_smp = np.array([s for _, s in events], dtype=np.int64)
            for b in starts:
                if ev_pos.size == 0:
                    word_onsets.append(np.nan)
                    continue
                # espeak may merge or split words (numbers, abbreviations): take the nearest event
                j = int(np.argmin(np.abs(ev_pos - b)))
                word_onsets.append((offset + ev_smp[j]) / self.sample_rate)
            line_onsets.append(offset / self.sample_rate)
            pieces += [audio, pause]
            offset += audio.size + pause.size
        onsets = np.array(word_onsets, dtype=np.float64)
        if onsets.size and np.isnan(onsets).any():  # a line espeak said nothing for: spread its words evenly
            idx = np.arange(onsets.size)
            good = ~np.isnan(onsets)
            onsets = np.interp(idx, idx[good], onsets[good]) if good.any() else idx * 0.3
        samples = (np.concatenate(pieces).astype(np.float32) / 32768.0) if pieces else np.zeros(0, np.float32)
        return Speech(samples, self.sample_rate, np.maximum.accumulate(onsets) if onsets.size else onsets,
                      np.array(line_onsets, dtype=np.float64))
