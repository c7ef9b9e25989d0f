"""Lyrics-to-audio alignment: one interface, several aligners.

An ``Aligner`` turns (mix, vocals, vocal activity, lyrics, language) into an onset in
seconds for every character of the lyrics string (index for index, so a training window
can cut the string by time) and for every word, plus a per-song confidence in [0, 1].

Aligners, weakest first: the paper's first heuristic (characters spread linearly over the
song), a vocal-activity variant (characters spread over the frames where the vocal stem is
active), the offline default TTS+DTW (``dtw.py``: espeak-ng speech of the lyrics aligned to
the vocal stem) and a CTC aligner for users with wav2vec2/MMS-style weights (``ctc.py``).
``auto`` chains them: the strongest that can align a song does, and why the stronger ones
could not (no weights, no voice for the language, lyrics the song cannot hold) is kept
with the song. An alignment less sure than ``min_confidence`` (lyrics that belong to
another song, a mix the aligner cannot read) is replaced by the linear spread: a window
then gets the song's lyrics roughly where they are rather than precisely where they are not.
The row keeps the measured confidence and says that it fell back.
"""

from __future__ import annotations

import numpy as np

from pipeline.align.base import (  # noqa: F401 (the interface, re-exported)
    WORD_RE,
    Aligner,
    AlignerUnavailable,
    AlignInput,
    Alignment,
    finish_alignment,
    word_starts,
)


class LinearAligner(Aligner):
    """The paper's first heuristic: character i starts at i / len(lyrics) of the song."""

    name = "linear"

    def align(self, item: AlignInput) -> Alignment:
        n = len(item.lyrics)
        onsets = np.arange(n, dtype=np.float64) / max(n, 1) * item.duration_s
        # No evidence from the audio at all: confidence 0 by definition.
        return finish_alignment(item.lyrics, onsets, item.duration_s, 0.0, self.name)


class VocalActivityAligner(Aligner):
    """Characters spread linearly over the vocal-active frames only.

    Falls back to the linear heuristic (recorded in ``method``) when the vocal stem has
    less than ``min_active_s`` of activity: an instrumental-sounding stem says nothing.
    Confidence is a plausibility prior, not a measured accuracy: 0.5 when the implied
    singing rate (characters per active second) is within what people sing (4-30),
    0.2 outside it.
    """

    name = "vocal_activity"

    def __init__(self, min_active_s: float = 2.0):
        self.min_active_s = min_active_s

    def align(self, item: AlignInput) -> Alignment:
        va = item.vocal_activity
        n = len(item.lyrics)
        active_s = float(va.active.sum() * va.hop_seconds) if va is not None else 0.0
        if va is None or active_s < self.min_active_s or n == 0:
            out = LinearAligner().align(item)
            out.method = f"linear (fallback: {active_s:.1f} s vocal activity)" if n else "linear"
            return out
        frames = np.flatnonzero(va.active)
        # position of each character on the concatenated active-time axis, then back to song time
        pos = np.arange(n, dtype=np.float64) / n * frames.size
        idx = np.minimum(pos.astype(np.int64), frames.size - 1)
        onsets = (frames[idx] + (pos - idx)) * va.hop_seconds
        rate = n / active_s
        return finish_alignment(item.lyrics, onsets, item.duration_s, 0.5 if 4.0 <= rate <= 30.0 else 0.2, self.name)


class FallbackAligner(Aligner):
    """Try each aligner in turn; the first that can align the song wins.

    The language comes from the song's metadata, else a guess from the lyrics
    (``language.py``); an unknown language makes the TTS aligner step aside.
    """

    name = "auto"

    def __init__(self, chain: list[Aligner], min_language_probability: float = 0.5):
        self.chain = chain
        self.min_language_probability = min_language_probability
        self.needs_vocals = any(a.needs_vocals for a in chain)

    def align(self, item: AlignInput) -> Alignment:
        from dataclasses import replace

        from pipeline.align.language import resolve_language

        lang = resolve_language(item.language, item.lyrics, self.min_language_probability)
        item = replace(item, language=lang.code)
        notes = [f"language {lang.describe()}"]
        for aligner in self.chain:
            try:
                out = aligner.align(item)
            except AlignerUnavailable as e:
                notes.append(f"{aligner.name} skipped: {e}")
                continue
            out.language, out.notes = lang.code, "; ".join(notes + ([out.notes] if out.notes else []))
            return out
        raise AlignerUnavailable("; ".join(notes))  # unreachable while the chain ends with the linear aligner


class LowConfidenceFallback(Aligner):
    """The inner aligner's result when it is sure enough, else the linear spread, whose method
    names the alignment it replaced and why; the measured confidence is kept."""

    def __init__(self, inner: Aligner, min_confidence: float):
        self.inner, self.min_confidence = inner, min_confidence
        self.name, self.needs_vocals = inner.name, inner.needs_vocals

    def align(self, item: AlignInput) -> Alignment:
        out = self.inner.align(item)
        if out.confidence >= self.min_confidence or out.method.startswith("linear") or not out.word_onsets.size:
            return out
        linear = LinearAligner().align(item)
        linear.method = f"linear (fallback: {out.method} confidence {out.confidence:.2f} < {self.min_confidence:g})"
        linear.confidence, linear.language, linear.notes = out.confidence, out.language, out.notes
        return linear


def low_confidence_fallback(method: str) -> bool:
    """Whether a row's alignment method is a low-confidence fallback to the linear spread."""
    return method.startswith("linear (fallback: ") and " confidence " in method


ALIGNERS = ("auto", "ctc", "tts_dtw", "vocal_activity", "linear")


def build_aligner(name: str, ctc_model: str = "", min_language_probability: float = 0.5, device: str = "cpu",
                  min_confidence: float = 0.0, confidence_shuffles: int = 8, repeats: bool = True) -> Aligner:
    """``auto`` = ctc (when ``ctc_model`` is given) -> tts_dtw -> vocal_activity -> linear; with
    ``min_confidence`` > 0, an alignment less sure than that becomes the linear spread.
    ``confidence_shuffles``: the TTS+DTW aligner's word-shuffled comparisons (``dtw.py``);
    ``repeats``: its second path anchoring repeated lyrics where the music repeats (``repeats.py``)."""
    aligner = _build(name, ctc_model, min_language_probability, device, confidence_shuffles, repeats)
    return LowConfidenceFallback(aligner, min_confidence) if min_confidence > 0 and name != "linear" else aligner


def _build(name: str, ctc_model: str, min_language_probability: float, device: str, shuffles: int, repeats: bool) -> Aligner:
    if name not in ALIGNERS:
        raise ValueError(f"unknown aligner {name!r}; available: {', '.join(ALIGNERS)}")
    if name == "linear":
        return LinearAligner()
    if name == "vocal_activity":
        return VocalActivityAligner()
    from pipeline.align.dtw import TTSDTWAligner, TTSDTWOptions

    tts_dtw = TTSDTWAligner(TTSDTWOptions(null_shuffles=shuffles, repeats=repeats))
    if name == "tts_dtw":
        return tts_dtw
    if name == "ctc":
        if not ctc_model:
            raise ValueError("the ctc aligner needs align.ctc_model: a local folder or a hub id of a CTC checkpoint")
        from pipeline.align.ctc import CTCAligner

        return CTCAligner(ctc_model, device=device)
    chain: list[Aligner] = []
    if ctc_model:
        from pipeline.align.ctc import CTCAligner

        chain.append(CTCAligner(ctc_model, device=device))
    chain += [tts_dtw, VocalActivityAligner(), LinearAligner()]
    return FallbackAligner(chain, min_language_probability)
