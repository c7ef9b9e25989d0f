"""Where a song repeats itself: anchors for lyrics that repeat (choruses).

A chorus sung three times is three copies of the same lines, and three passages of the song
with the same melody and chords. The TTS+DTW path matches spectral envelopes only, so it
can put a copy of the lines on the wrong passage (a long "ooh" after it, an instrumental bar
before it) and still pay less than the right one. The chords tell the copies apart: on the
three shared annotated songs, one chorus's chroma slid along its own song peaks at every
other copy of it within 0.1 s (scores 0.78-0.93 against a median of 0.39-0.50).

So, after a first path:

1. **Repeated blocks of lines** (``repeated_blocks``): runs of consecutive lines that occur
   again, word for word or nearly (``difflib`` ratio >= 0.8: "das ist" / "dann ist").
2. **The copy to trust**: each copy's passage on the first path is slid along the song's
   chroma; the copy whose passage finds as many strong repeats as there are other copies,
   with the highest mean score, is taken as placed right.
3. **Where the music repeats**: that passage and every clear, sung repeat of it. Each line
   of each copy may start within ``anchor_window_s`` of any of them (plus the line's offset
   in the trusted copy); the second path pays ``anchor_cost`` for entering it anywhere else.
   Which copy goes to which repeat is left to the path, so an instrumental repeat or a
   repeat of a longer section costs nothing. A section (verse and chorus) that repeats as a
   whole repeats at any offset inside it, so where the trusted copy itself starts matters:
   every other copy's start on the first path proposes a shift of all the windows, and the
   shift whose path costs least is kept.

A block is left alone when its repeats are not clearly stronger than the song's other
passages (``min_z`` standard deviations), or when fewer sung repeats than copies are found
(a repeat's vocalness under half the trusted copy's), so a song without clear repeats
aligns as before.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

CHROMA_RATE = 10  # frames per second
MAX_FRAMES = 6_000  # longer songs are compared on pooled frames: the similarity matrix stays under 150 MB
MAX_LINES = 400  # more lines than any song's lyrics: not compared (the comparison is quadratic)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _norm(line: str) -> str:
    return " ".join(_WORD.findall(line.lower()))


def repeated_blocks(lines: list[str], similar: float = 0.8, min_words: int = 6) -> list[tuple[int, list[int]]]:
    """Blocks of consecutive lines that recur: (lines per block, first line of each copy), longest first.

    A line is in one block at most; blocks of fewer than ``min_words`` words, and lines of
    fewer than three distinct words ("ooh ooh ooh", "ah ah ah"), are not used: vocables repeat
    everywhere and say nothing about where a chorus is.
    """
    norm = [_norm(x) for x in lines]
    n = len(norm)
    if n > MAX_LINES:
        return []
    lexical = [len(set(x.split())) >= 3 for x in norm]
    same = np.zeros((n + 1, n + 1), bool)
    for a in range(n):
        for b in range(a + 1, n):
            if lexical[a] and lexical[b]:
                m = difflib.SequenceMatcher(None, norm[a], norm[b])
                same[a, b] = same[b, a] = m.real_quick_ratio() >= similar and m.quick_ratio() >= similar and m.ratio() >= similar
    run = np.zeros((n + 1, n + 1), np.int64)  # run[a, b]: similar lines from a and from b on
    for a in range(n - 1, -1, -1):
        for b in range(n - 1, -1, -1):
            if a != b and same[a, b]:
                run[a, b] = 1 + run[a + 1, b + 1]
    used = np.zeros(n, bool)
    blocks = []
    for length in range(min(int(run.max(initial=0)), n // 2), 0, -1):
        for a in range(n - length + 1):
            if used[a:a + length].any():
                continue
            copies = [a]
            for b in np.flatnonzero(run[a, :n] >= length):
                if b >= copies[-1] + length and not used[b:b + length].any():
                    copies.append(int(b))
            if len(copies) >= 2 and sum(len(norm[a + i].split()) for i in range(length)) >= min_words:
                blocks.append((length, copies))
                for c in copies:
                    used[c:c + length] = True
    return blocks


def chroma(stem: np.ndarray, sample_rate: int) -> np.ndarray:
    """Unit-norm chroma, ``CHROMA_RATE`` frames a second."""
    import librosa

    sr = 22050
    y = librosa.resample(np.ascontiguousarray(stem, dtype=np.float32), orig_sr=sample_rate, target_sr=sr, res_type="soxr_hq")
    # tuning 0: a song is compared only with itself, so a detuned recording shifts every frame alike;
    # and the tuning estimate runs librosa's cached numba gufuncs, which a new environment's workers
    # can corrupt by compiling them at once (infra/install.sh numba-caches)
    c = librosa.feature.chroma_stft(y=y, sr=sr, hop_length=sr // CHROMA_RATE, n_fft=4096, tuning=0.0)
    return (c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-9)).astype(np.float32)


def slide(similarity: np.ndarray, start: int, length: int) -> np.ndarray:
    """Mean chroma similarity of the passage [start, start + length) with the one at every frame."""
    t = similarity.shape[0] - length + 1
    out = np.zeros(max(t, 0), np.float32)
    for u in range(length):
        out += similarity[u:u + t, start + u]
    return out / length


def _peaks(score: np.ndarray, spacing: int, count: int, exclude: int) -> list[int]:
    """The ``count`` highest frames at least ``spacing`` apart and from ``exclude``."""
    found: list[int] = []
    for t in np.argsort(-score):
        if abs(t - exclude) >= spacing and all(abs(t - p) >= spacing for p in found):
            found.append(int(t))
            if len(found) == count:
                break
    return found


@dataclass
class RepeatGroup:
    """One repeated block: where its music recurs, and the shifts of those places to try."""

    copies: list[int]  # first line of each copy
    lines: int  # lines per copy
    offsets: list[float]  # each line's start after its copy's start (the trusted copy's, first path)
    positions: list[float]  # seconds: the trusted copy's start on the first path, and its repeats
    shifts: list[float]  # common shifts of ``positions`` to try: 0 and what each other copy's first path implies
    info: dict

    def windows(self, shift: float, window_s: float) -> dict[int, list[tuple[float, float]]]:
        """Every line of every copy may start near any repeat (the path chooses which copy goes where)."""
        return {c + i: [(p + shift + off - window_s, p + shift + off + window_s) for p in self.positions]
                for c in self.copies for i, off in enumerate(self.offsets)}


def repeat_groups(lines: list[str], line_starts_s: np.ndarray, block_ends_s, chroma_frames: np.ndarray,
                  vocalness: np.ndarray, vocal_rate: float, min_z: float = 3.0, max_shifts: int = 3,
                  blocks: list[tuple[int, list[int]]] | None = None) -> tuple[list[RepeatGroup], list[dict]]:
    """The repeated blocks whose music clearly recurs, from a first path's line starts; and why the others were left.

    ``block_ends_s(first, last)``: where the first path ends the lines first..last (seconds).
    ``vocalness``: 0..1 per frame at ``vocal_rate`` frames a second. ``blocks``: ``repeated_blocks(lines)``.
    """
    pool = -(-chroma_frames.shape[1] // MAX_FRAMES)
    if pool > 1:  # a long song: average ``pool`` frames (a 40-minute song is compared at 2.5 frames a second)
        usable = chroma_frames[:, :chroma_frames.shape[1] // pool * pool]
        chroma_frames = usable.reshape(12, -1, pool).mean(axis=2)
        chroma_frames /= np.linalg.norm(chroma_frames, axis=0, keepdims=True) + 1e-9
    rate = CHROMA_RATE / pool
    sim = chroma_frames.T @ chroma_frames
    total = sim.shape[0]
    groups, left = [], []

    def sung(f: int, n: int) -> float:
        a, b = int(f / rate * vocal_rate), int((f + n) / rate * vocal_rate)
        return float(vocalness[a:max(b, a + 1)].mean()) if a < vocalness.size else 0.0

    for length, copies in repeated_blocks(lines) if blocks is None else blocks:
        starts = np.array([line_starts_s[c] for c in copies])
        spans = np.array([block_ends_s(c, c + length - 1) for c in copies]) - starts
        n = max(2, int(round(np.clip(np.median(spans), 2.0, 30.0) * rate)))
        if total < 2 * n:
            left.append({"copies": copies, "why": "song too short"})
            continue
        frames = np.clip(np.round(starts * rate).astype(int), 0, total - n)
        best = None
        for r, f in enumerate(frames):
            score = slide(sim, f, n)
            found = _peaks(score, max(1, n // 2), len(copies) - 1, f)
            if len(found) < len(copies) - 1:
                continue
            strength = float(np.mean(score[found]))
            if best is None or strength > best[0]:
                best = (strength, r, score)
        if best is None:
            left.append({"copies": copies, "why": "fewer repeats than copies"})
            continue
        strength, r, score = best
        median, spread = float(np.median(score)), float(np.std(score)) + 1e-6
        z = (strength - median) / spread
        if z < min_z:
            left.append({"copies": copies, "why": f"repeats not clear (z {z:.1f})"})
            continue
        # every clear repeat of the trusted copy's passage that is sung, its own place included
        own = int(frames[r])
        repeats = [t for t in _peaks(score, max(1, n // 2), 4 * len(copies), own) if (score[t] - median) / spread >= min_z]
        positions = sorted(t for t in [own] + repeats if sung(t, n) >= 0.5 * sung(own, n))
        if len(positions) < len(copies):
            left.append({"copies": copies, "why": "fewer sung repeats than copies"})
            continue
        pos_s = np.array(positions) / rate
        # each copy's own start proposes a shift; the most proposed few are tried (each costs a path)
        proposed = [float(p - pos_s[np.argmin(np.abs(pos_s - p))]) for p in starts]
        proposed = [d for d in proposed if 0.3 < abs(d) <= n / rate / 2]
        shifts = [0.0]
        for d in sorted(proposed, key=lambda d: -sum(abs(d - e) <= 0.3 for e in proposed)):
            if len(shifts) <= max_shifts and all(abs(d - x) > 0.3 for x in shifts):
                shifts.append(d)
        offsets = [float(line_starts_s[copies[r] + i] - line_starts_s[copies[r]]) for i in range(length)]
        groups.append(RepeatGroup(copies, length, offsets, [float(x) for x in pos_s], shifts,
                                  {"copies": copies, "lines": length, "trusted": copies[r], "z": round(z, 2),
                                   "strength": round(strength, 3), "repeats_s": [round(float(x), 1) for x in pos_s]}))
    return groups, left


def anchor_windows(lyrics: str, stem: np.ndarray, sample_rate: int, word_onsets: np.ndarray, vocalness: np.ndarray,
                   vocal_rate: float, window_s: float, path_cost) -> tuple[dict[int, list[tuple[float, float]]], list[dict]]:
    """Windows for the lines (index among the non-empty lines) of every repeated block whose music
    clearly repeats, each block at the shift whose path costs least (``path_cost(windows)``);
    and a report per block. ``word_onsets``: the first path's, seconds."""
    lines = [line for line in lyrics.splitlines() if line.split()]
    first = np.cumsum([0] + [len(line.split()) for line in lines])  # each line's first word

    def block_end(a: int, b: int) -> float:
        end = word_onsets[first[b + 1] - 1] + 1.0
        return float(min(end, word_onsets[first[b + 1]])) if b + 1 < len(lines) else float(end)

    blocks = repeated_blocks(lines)
    if not blocks:  # nothing repeats in the lyrics: no chroma to compute
        return {}, []
    groups, left = repeat_groups(lines, word_onsets[first[:-1]], block_end, chroma(stem, sample_rate), vocalness, vocal_rate,
                                 blocks=blocks)
    windows: dict[int, list[tuple[float, float]]] = {}
    report = []
    for g in groups:
        costs = [path_cost(g.windows(shift, window_s)) for shift in g.shifts] if len(g.shifts) > 1 else [0.0]
        shift = g.shifts[int(np.argmin(costs))]
        windows.update(g.windows(shift, window_s))
        report.append({**g.info, "shift_s": round(shift, 2), "shifts_tried": [round(x, 2) for x in g.shifts]})
    return windows, report + left
