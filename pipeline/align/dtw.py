"""The offline default aligner: synthesise the lyrics with espeak-ng, align by DTW on MFCCs.

The synthetic speech has exact word onsets (``tts.py``); a monotonic alignment of its
frames to the song's vocal-stem frames carries them onto the song. What makes this work
on sung audio, beyond textbook DTW (each measured on the three shared real songs with
``bench/bench_alignment.py``):

- **An HMM-like path, not a symmetric one.** Every song frame is emitted by exactly one
  synthetic frame; from one song frame to the next the synthetic position stays (a held
  note), advances by one, or skips one (singing faster than the speech, small penalty).
  Path costs then compare fairly whatever the tempo.
- **Gaps between lines.** After each lyric line (and before the first) the path may leave
  the speech and sit in a "gap" state for any number of song frames; a gap frame costs
  little where the vocal stem is quiet and much where it is loud. Instrumental intros,
  breaks and outros fall into gaps instead of dragging words into them.
- **Soft vocal activity from loudness.** Which frames hold singing is read from the vocal
  stem's loudness relative to its own distribution (quantiles): on the DSP stem this
  separates sung from not-sung frames far better than the stem/mix energy ratio
  (ROC AUC 0.84-0.90 vs 0.52-0.70 on the three songs).
- **Speech rate matched to the song.** The speech is re-synthesised at the rate that
  makes it fill a fixed share of the song's vocal-active time, so a held note is a "stay"
  and the skip move is rarely needed.
- **Few, low cepstra** (c1-c9, mean/variance normalised per recording): the spectral
  envelope (vowel identity) survives the change from speech to singing; finer cepstra
  follow the pitch harmonics, which differ.
- **Choruses anchored where the music repeats** (``repeats.py``): a second path whose
  repeated blocks of lines may start only where the song's chroma repeats.

**Confidence: the lyrics against the same words shuffled.** A monotonic path with gaps can
make any text fit any song a little, so how well the matched frames agree says little by
itself (on the three shared songs, another song's lyrics scored 0.37-0.45 and the song's own
0.42-0.47). The aligner therefore also aligns ``null_shuffles`` copies of the lyrics with the
words shuffled (the same words, lines and speech rate; only the order, which is what the
singing follows, is lost), and measures how many of their standard deviations the real
lyrics' path agrees better than theirs. On the three shared songs (``bench/bench_alignment.py``):
own lyrics z = +3.2 to +19.4, another song's -5.7 to +0.6. ``confidence = clip(z / 4, 0, 1)``,
so 0.5 means two standard deviations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.align.base import Aligner, AlignerUnavailable, AlignInput, Alignment, char_onsets_from_words, finish_alignment, word_starts
from pipeline.align.features import FEATURE_RATE, HOP, cepstra, mel, vocalness
from pipeline.align.tts import Espeak, Speech

_CELL_BUDGET = 200_000_000  # synthetic x song frames; above it frames are pooled (memory of the back-pointers)


class AlignmentFailed(AlignerUnavailable):
    """No monotonic path exists (for example, far more lyrics than the song can hold)."""


@dataclass
class TTSDTWOptions:
    n_mfcc: int = 10  # c0..c9; c0 (loudness) is dropped
    features: str = "vocals"  # "vocals" (the separated stem) or "mix"
    fill: float = 0.7  # the speech is sped up or slowed to last this share of the vocal-active time
    words_per_minute: tuple[int, int] = (80, 450)  # espeak-ng's usable range
    line_pause_s: float = 0.3
    silence_db: float = 40.0  # synthetic frames this far below the loudest are pauses and are dropped
    vocal_quantiles: tuple[float, float] = (0.2, 0.6)  # loudness quantiles mapped to vocalness 0 and 1
    smooth_s: float = 0.3
    nonvocal_cost: float = 0.5  # added to a speech frame matched to a frame with no singing
    gap_cost: float = 0.15  # a gap frame with no singing
    gap_vocal_cost: float = 0.6  # added to a gap frame with singing
    skip_cost: float = 0.05
    null_shuffles: int = 8  # word-shuffled copies of the lyrics the confidence compares with (0: no comparison)
    confidence_z: float = 4.0  # z (standard deviations above the shuffled copies) that makes confidence 1
    repeats: bool = True  # a second path with the lines of repeated blocks anchored where the song repeats (repeats.py)
    anchor_cost: float = 100.0  # entering an anchored line outside its windows: above 130 frames of loud singing in a gap
    anchor_window_s: float = 1.0


def _viterbi(song, speech, v, line_start, line_end, opt: TTSDTWOptions, anchor_ok: np.ndarray | None = None):
    from pipeline.align._dtw_kernel import align_path  # numba: compiled on first use, cached on disk

    if anchor_ok is None:
        anchor_ok = np.ones((line_start.size, 1), np.bool_)  # nothing anchored: never read past column 0
    return align_path(song, speech, v, line_start, line_end, opt.nonvocal_cost, opt.gap_cost, opt.gap_vocal_cost, opt.skip_cost,
                      ~anchor_ok.all(axis=1), anchor_ok, opt.anchor_cost)


def shuffled_words(lyrics: str, rng: np.random.Generator) -> str:
    """The same words in a random order, each line keeping its number of words."""
    lines = lyrics.splitlines()
    words = [w for line in lines for w in line.split()]
    words = [words[i] for i in rng.permutation(len(words))]
    out, k = [], 0
    for line in lines:
        n = len(line.split())
        out.append(" ".join(words[k:k + n]))
        k += n
    return "\n".join(out)


@dataclass
class _Problem:
    """One speech against one song: the features and line structure every path between them shares."""

    song: np.ndarray  # (d, song frames) normalised cepstra, pooled
    v: np.ndarray  # vocalness per pooled song frame
    speech: np.ndarray  # (d, kept speech frames)
    kept: np.ndarray  # speech frame of each kept frame
    pool: int  # song frames pooled into one
    lines: np.ndarray  # the non-empty lines that have kept frames
    line_start: np.ndarray  # first and last kept frame of each of them
    line_end: np.ndarray


@dataclass
class _Fit:
    problem: _Problem
    path: np.ndarray  # per song frame: the speech frame it is matched to, -1 in a gap
    cost: float  # of the path

    def agreement(self) -> float:
        """Mean cosine similarity of the matched song and speech frames."""
        j = np.flatnonzero(self.path >= 0)
        p = self.problem
        return float(np.einsum("dk,dk->k", p.song[:, j], p.speech[:, self.path[j]]).mean()) if j.size else 0.0

    def against_random(self) -> float:
        """How much better the matched frames agree than random pairs (0 = no better, 1 = identical)."""
        j = np.flatnonzero(self.path >= 0)
        if j.size < 10:
            return 0.0
        song, speech = self.problem.song, self.problem.speech
        matched = 1.0 - np.einsum("dk,dk->k", song[:, j], speech[:, self.path[j]])
        rng = np.random.default_rng(0)
        rj, ri = rng.choice(j, 4000), rng.integers(0, speech.shape[1], 4000)
        null = 1.0 - np.einsum("dk,dk->k", song[:, rj], speech[:, ri])
        return float(np.clip(1.0 - matched.mean() / max(null.mean(), 1e-6), 0.0, 1.0))

    def song_seconds(self, onsets_s: np.ndarray) -> np.ndarray:
        """Speech times -> the time of the first song frame whose path reaches them."""
        # onset in speech frames -> first kept frame at/after it -> first song frame that reaches it
        kept = self.problem.kept
        frame = np.minimum(np.searchsorted(kept, np.ceil(onsets_s * FEATURE_RATE / HOP)), kept.size - 1)
        reached = np.maximum.accumulate(self.path)
        frames = np.minimum(np.searchsorted(reached, frame, side="left"), self.path.size - 1)
        return frames * self.problem.pool * HOP / FEATURE_RATE


class TTSDTWAligner(Aligner):
    name = "tts_dtw"
    needs_vocals = True

    def __init__(self, options: TTSDTWOptions | None = None):
        self.opt = options or TTSDTWOptions()
        self._tts: Espeak | None = None
        self.repeat_report: list[dict] = []  # the last song's repeated blocks (``repeats.py``)

    @property
    def tts(self) -> Espeak:
        if self._tts is None:
            self._tts = Espeak()
        return self._tts

    def _speech(self, item: AlignInput, vocal_active_s: float) -> tuple[Speech, int]:
        """The lyrics spoken at the rate that fills ``fill`` of the vocal-active time, and that rate."""
        opt = self.opt
        probe_wpm = 175  # synthesize() raises TTSUnavailable when espeak-ng has no voice for the language
        speech = self.tts.synthesize(item.lyrics, item.language, opt.line_pause_s, probe_wpm)
        spoken_s = len(speech.samples) / speech.sample_rate - opt.line_pause_s * len(speech.line_onsets)
        wpm = int(np.clip(probe_wpm * spoken_s / max(opt.fill * vocal_active_s, 1e-3), *opt.words_per_minute))
        return (speech if wpm == probe_wpm else self.tts.synthesize(item.lyrics, item.language, opt.line_pause_s, wpm)), wpm

    def align(self, item: AlignInput) -> Alignment:
        opt = self.opt
        self.repeat_report = []
        n_words = word_starts(item.lyrics).size
        if n_words == 0:
            return finish_alignment(item.lyrics, np.zeros(len(item.lyrics)), item.duration_s, 0.0, self.name)
        # checked before speaking (5 KB of lyrics is 14 MB of speech): more words than the fastest
        # rap fits in the song are not this song's lyrics
        if n_words > opt.words_per_minute[1] * item.duration_s / 60:
            raise AlignmentFailed(f"{n_words} words in a {item.duration_s:.0f}-s song is over "
                                  f"{opt.words_per_minute[1]} words/min: not this song's lyrics")
        stem = item.vocals if item.vocals is not None else item.mix
        if stem is None:
            raise AlignmentFailed("the TTS+DTW aligner needs the vocal stem or the mix")
        mono = stem.mean(axis=1) if stem.ndim == 2 else stem
        vocal_mel = mel(mono, item.sample_rate)
        v = vocalness(vocal_mel, opt.vocal_quantiles, int(round(opt.smooth_s * FEATURE_RATE / HOP)))
        if opt.features == "mix" and item.mix is not None:
            song_mel = mel(item.mix.mean(axis=1), item.sample_rate)[:, :v.size]
        else:
            song_mel = vocal_mel
        speech, wpm = self._speech(item, float(v.sum()) * HOP / FEATURE_RATE)
        problem = self._prepare(song_mel, v, speech, item.duration_s)
        first = self._solve(problem)
        fit, repeats_note = first, ""
        if opt.repeats:
            fit, repeats_note = self._refit_on_repeats(item, mono, problem, first, speech.word_onsets, v)
        word_onsets = fit.song_seconds(speech.word_onsets)
        chars = char_onsets_from_words(item.lyrics, word_onsets, item.duration_s)
        out = finish_alignment(item.lyrics, chars, item.duration_s, 0.0, self.name)
        # the confidence compares first paths: the shuffled copies have no repeated lines to anchor
        if opt.null_shuffles > 0:
            z, nulls = self._against_shuffled(item, first, song_mel, v, wpm)
            out.confidence = float(np.clip(z / opt.confidence_z, 0.0, 1.0))
            out.notes = f"lyrics vs {nulls} word-shuffled copies: z = {z:+.1f}"
        else:
            out.confidence = first.against_random()
        out.notes = "; ".join(x for x in (out.notes, repeats_note) if x)
        return out

    def _refit_on_repeats(self, item: AlignInput, mono: np.ndarray, problem: _Problem, first: _Fit, speech_onsets: np.ndarray,
                          v: np.ndarray) -> tuple[_Fit, str]:
        """A second path with the lines of repeated blocks anchored where the music repeats, and a note."""
        from pipeline.align.repeats import anchor_windows

        windows, self.repeat_report = anchor_windows(
            item.lyrics, mono, item.sample_rate, first.song_seconds(speech_onsets), v, FEATURE_RATE / HOP,
            self.opt.anchor_window_s, lambda w: self._solve(problem, w).cost)
        if not self.repeat_report:
            return first, ""
        used = sum("shift_s" in g for g in self.repeat_report)
        note = f"repeated blocks anchored where the music repeats: {used} of {len(self.repeat_report)}"
        return (self._solve(problem, windows) if windows else first), note

    def _prepare(self, song_mel: np.ndarray, v: np.ndarray, speech: Speech, duration_s: float) -> _Problem:
        """The features and line structure of a speech against the song, for any number of paths."""
        opt = self.opt
        speech_mel = mel(speech.samples, speech.sample_rate)
        loud = 10 * np.log10(speech_mel.sum(axis=0) + 1e-12)
        kept = np.flatnonzero(loud > loud.max() - opt.silence_db)
        # pool frames when the back-pointer table would be too large (very long songs)
        pool = int(np.ceil(np.sqrt(kept.size * v.size / _CELL_BUDGET)))
        song = cepstra(song_mel, opt.n_mfcc, v > 0.5)[:, ::pool]
        kept = kept[::pool]
        speech_c = cepstra(speech_mel, opt.n_mfcc)[:, kept]
        # espeak-ng's fastest speech is about as fast as anyone raps: lyrics that need longer than the song are not its lyrics
        if kept.size > song.shape[1]:
            raise AlignmentFailed(f"the lyrics need {kept.size * HOP * pool / FEATURE_RATE:.0f} s of speech even at "
                                  f"{opt.words_per_minute[1]} words/min; the song is {duration_s:.0f} s")
        # line structure on the kept frames; gaps are allowed before a line and after the last
        # frame boundaries by ceil for lines and words alike: a line's first word never lands in the line before
        line_of = np.searchsorted(np.ceil(speech.line_onsets * FEATURE_RATE / HOP), kept, side="right") - 1
        lines = np.unique(line_of)
        line_start = np.array([np.flatnonzero(line_of == k)[0] for k in lines], dtype=np.int64)
        line_end = np.array([np.flatnonzero(line_of == k)[-1] for k in lines], dtype=np.int64)
        return _Problem(song, v[::pool], speech_c, kept, pool, lines, line_start, line_end)

    def _solve(self, p: _Problem, anchors: dict[int, list[tuple[float, float]]] | None = None) -> _Fit:
        """The best monotonic path of the speech's frames through the song's; ``anchors``: for some
        lines (index among the non-empty lines), the spans of song seconds where each may start."""
        ok = None
        if anchors:
            ok = np.ones((p.lines.size, p.song.shape[1]), np.bool_)
            frames_per_s = FEATURE_RATE / HOP / p.pool
            for row, k in enumerate(p.lines):
                if k in anchors:
                    ok[row] = False
                    for lo, hi in anchors[k]:
                        ok[row, max(0, int(lo * frames_per_s)):max(0, int(np.ceil(hi * frames_per_s)) + 1)] = True
        path, cost = _viterbi(p.song, p.speech, p.v, p.line_start, p.line_end, self.opt, ok)
        if not np.isfinite(cost):
            raise AlignmentFailed("no monotonic alignment")
        return _Fit(p, path, float(cost))

    def _against_shuffled(self, item: AlignInput, fit: _Fit, song_mel: np.ndarray, v: np.ndarray,
                          words_per_minute: int) -> tuple[float, int]:
        """How many standard deviations the lyrics' path agrees better with the song than the
        paths of the same words shuffled (seeded by the lyrics: a rerun gives the same value)."""
        import zlib

        rng = np.random.default_rng(zlib.crc32(item.lyrics.encode("utf-8")))
        nulls = []
        for _ in range(self.opt.null_shuffles):
            speech = self.tts.synthesize(shuffled_words(item.lyrics, rng), item.language, self.opt.line_pause_s, words_per_minute)
            try:
                nulls.append(self._solve(self._prepare(song_mel, v, speech, item.duration_s)).agreement())
            except AlignmentFailed:
                continue  # a shuffle that cannot fit says nothing either way
        if len(nulls) < 2:
            return 0.0, len(nulls)
        spread = max(float(np.std(nulls)), 1e-3)  # a floor: eight nearly equal nulls must not make any gain infinite
        return (fit.agreement() - float(np.mean(nulls))) / spread, len(nulls)
