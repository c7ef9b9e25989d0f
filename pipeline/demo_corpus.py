"""A small synthetic song corpus made on the spot (no download): for the demo job and tests.

Each song has an instrumental part (chords panned wide, bass, kick and hi-hat) and a
voice-like stem (harmonic source at a sung melody with vibrato, shaped by vowel
formants, panned centre) singing the lyrics at known word times. Written beside each
mix: the stems and the word timings in the JamendoLyrics layout
(``lyrics/<name>.txt``, ``lyrics/<name>.words.txt``, ``annotations/words/<name>.csv``),
so separation and alignment can be scored against ground truth.

    python -m pipeline.demo_corpus <folder> [--songs 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = (
    "night light river shine over the city we sing along till morning comes "
    "heart beat slow and steady under silver moon rain falls on the open road "
    "hold on hold my hand never let go dream a little longer"
).split()
# F1, F2, F3 (Hz) of sung vowels: enough to make the stem voice-like for a separator/VAD.
FORMANTS = {"a": (800, 1150, 2900), "e": (400, 1600, 2700), "i": (300, 2300, 3000),
            "o": (450, 800, 2830), "u": (325, 700, 2530)}
# (artist, genre, language, mark on the first word): non-ASCII names and lyrics on purpose.
ARTISTS = (("The Synthetics", "pop", "en", ""), ("Björk Ångström", "electronic ambient", "en", ""),
           ("Los Sintéticos", "folk", "es", "¡"), ("The Synthetics", "pop rock", "en", ""))
FORMATS = (("wav", "PCM_16", 48000), ("flac", "PCM_24", 22050), ("ogg", "VORBIS", 32000), ("mp3", "MPEG_LAYER_III", 44100))


@dataclass
class DemoSong:
    name: str
    path: Path
    artist: str
    genre: str
    language: str
    lyrics: str
    word_starts: list[float]
    word_ends: list[float]


def _voice(f0: np.ndarray, vowel: str, sr: int) -> np.ndarray:
    """A harmonic source at f0 (per sample) weighted by a formant envelope."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros_like(f0)
    for k in range(1, 40):
        freq = k * f0.mean()
        if freq > sr / 2 - 500:
            break
        gain = sum(np.exp(-0.5 * ((freq - fm) / (60 + 0.05 * fm)) ** 2) / (i + 1) for i, fm in enumerate(FORMANTS[vowel]))
        out += (gain + 0.02) / k**0.5 * np.sin(k * phase)
    return out / (np.abs(out).max() + 1e-9)


def synth_song(seconds: float, sr: int, rng: np.random.Generator, n_words: int) -> tuple[np.ndarray, np.ndarray, list, list, list]:
    """Returns (accompaniment (n,2), vocals (n,2), words, word starts, word ends)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    bpm = rng.uniform(90, 130)
    beat = 60.0 / bpm
    root = rng.choice([110.0, 123.5, 130.8, 146.8])
    acc = np.zeros((n, 2))
    for bar, start in enumerate(np.arange(0, seconds, 4 * beat)):
        i0, i1 = int(start * sr), min(n, int((start + 4 * beat) * sr))
        seg = t[i0:i1] - start
        chord_root = root * 2 ** ([0, 5, 7, 3][bar % 4] / 12)
        env = np.exp(-seg * 0.6)
        for j, interval in enumerate((0, 4, 7, 12)):
            f = 2 * chord_root * 2 ** (interval / 12)
            tone = sum(np.sin(2 * np.pi * h * f * seg) / h for h in range(1, 6)) * 0.05 * env
            pan = 0.2 + 0.6 * (j % 2)  # chords spread left/right: the voice is centred
            acc[i0:i1, 0] += tone * (1 - pan)
            acc[i0:i1, 1] += tone * pan
        acc[i0:i1] += (0.12 * np.sin(2 * np.pi * chord_root / 2 * seg) * env)[:, None]
    for b in np.arange(0, seconds, beat):  # kick on beats, hi-hat off beats
        i0 = int(b * sr)
        k = np.arange(min(int(0.15 * sr), n - i0)) / sr
        acc[i0:i0 + len(k)] += (0.3 * np.sin(2 * np.pi * 55 * k) * np.exp(-k * 30))[:, None]
        h0 = int((b + beat / 2) * sr)
        m = min(int(0.05 * sr), max(0, n - h0))
        acc[h0:h0 + m] += (0.04 * rng.standard_normal((m, 2)) * np.exp(-np.arange(m) / sr * 80)[:, None])
    vocals = np.zeros(n)
    words, starts, ends = [], [], []
    cursor = rng.uniform(1.5, 3.0)  # instrumental intro
    scale = root * 2 * 2 ** (np.array([0, 2, 4, 5, 7, 9]) / 12)
    while len(words) < n_words and cursor < seconds - 2.0:
        for _ in range(int(rng.integers(3, 6))):  # one lyric line
            if len(words) >= n_words or cursor > seconds - 1.5:
                break
            word = str(rng.choice(WORDS))
            dur = beat * rng.choice([0.5, 1.0, 1.0, 1.5])
            i0, i1 = int(cursor * sr), min(n, int((cursor + dur) * sr))
            seg = np.arange(i1 - i0) / sr
            f0 = rng.choice(scale) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * seg))
            vowel = next((c for c in word if c in FORMANTS), "a")
            env = np.minimum(1, seg / 0.03) * np.minimum(1, (dur - seg) / 0.05).clip(0)
            vocals[i0:i1] += 0.3 * _voice(f0, vowel, sr) * env
            words.append(word)
            starts.append(round(cursor, 4))
            ends.append(round(cursor + dur, 4))
            cursor += dur + beat * 0.1
        cursor += beat * rng.choice([1.0, 2.0, 4.0])  # a gap between lines
    return acc.astype(np.float32), np.repeat(vocals[:, None], 2, 1).astype(np.float32), words, starts, ends


def make_demo_corpus(folder: str | Path, songs: int = 4, seconds: float = 20.0, seed: int = 0) -> Path:
    """Writes songs in several formats and rates plus ``manifest.csv``; returns its path."""
    folder = Path(folder)
    for sub in ("audio", "stems", "lyrics", "annotations/words"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(songs):
        artist, genre, language, prefix = ARTISTS[i % len(ARTISTS)]
        ext, subtype, sr = FORMATS[i % len(FORMATS)]
        name = f"demo_{i:02d}"
        acc, voc, words, starts, ends = synth_song(seconds, sr, rng, n_words=int(seconds * 1.2))
        if prefix and words:
            words[0] = prefix + words[0]
        mix = np.clip(acc + voc, -1, 1)
        if ext == "ogg":
            mix = mix.mean(axis=1)  # one mono source, so the pipeline's mono path runs too
        sf.write(folder / "audio" / f"{name}.{ext}", mix, sr, subtype=subtype)
        sf.write(folder / "stems" / f"{name}.mix.wav", np.clip(acc + voc, -1, 1), sr, subtype="FLOAT")
        sf.write(folder / "stems" / f"{name}.vocals.wav", voc, sr, subtype="FLOAT")
        sf.write(folder / "stems" / f"{name}.accompaniment.wav", acc, sr, subtype="FLOAT")
        lines, line = [], []
        for w, s, e in zip(words, starts, ends):  # a line break wherever the singer paused long
            if line and s - line[-1][2] > 0.4:
                lines.append(line)
                line = []
            line.append((w, s, e))
        lines.append(line)
        text = "\n".join(" ".join(w for w, _, _ in ln) for ln in lines) + "\n"
        (folder / "lyrics" / f"{name}.txt").write_text(text, encoding="utf-8")
        (folder / "lyrics" / f"{name}.words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        with open(folder / "annotations" / "words" / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["word_start", "word_end", "line_end"])
            for ln in lines:
                for j, (_, s, e) in enumerate(ln):
                    w.writerow([s, e, e if j == len(ln) - 1 else "nan"])
        rows.append({"path": f"audio/{name}.{ext}", "artist": artist, "genre": genre,
                     "lyrics": f"lyrics/{name}.txt", "title": f"Demo song {i}", "language": language, "id": name})
    with open(folder / "JamendoLyrics.csv", "w", newline="", encoding="utf-8") as fh:  # so pipeline.align.evaluate reads it
        writer = csv.writer(fh)
        writer.writerow(["Filepath", "Artist", "Title", "Genre", "Language"])
        writer.writerows([[r["path"], r["artist"], r["title"], r["genre"], r["language"]] for r in rows])
    with open(folder / "stems_manifest.csv", "w", newline="", encoding="utf-8") as fh:  # for jobs/train_separator.py
        writer = csv.writer(fh)
        writer.writerow(["mix_path", "vocals_path", "accompaniment_path"])
        writer.writerows([[f"stems/{r['id']}.{k}.wav" for k in ("mix", "vocals", "accompaniment")] for r in rows])
    return write_manifest(folder / "manifest.csv", rows)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """A manifest CSV of ``rows`` (the columns of the first row)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--songs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_demo_corpus(args.folder, args.songs, args.seconds, args.seed))


if __name__ == "__main__":
    main()
