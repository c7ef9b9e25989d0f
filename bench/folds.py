"""The ten-recording corpus of the learning benchmarks and its folds.

Ten real recordings: the three JamendoLyrics songs (lyrics and word timings) and seven openly
licensed recordings without lyrics (``realdata/librosa``, ``manifest.csv``). A fold holds some
recordings out of every stage it runs: its shards are preprocessed from the other recordings
only, so its VQ-VAE's training rows, its code cache and every statistic fit on them cannot
contain a held-out recording. ``check_held_out`` proves it on what a fold built, by content
hash (a recording's ``song_id`` is the hash of its bytes, whatever it is called).

Folds are round-robin over the recordings with lyrics first, so with at least as many folds as
lyric songs each lyric song is held out in a different fold; ``rotate`` shifts the recordings
without lyrics to pair them differently (another rotation of the same protocol).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "realdata"
JAMENDO, LIBROSA = SHARED / "jamendo", SHARED / "librosa"


@dataclass(frozen=True)
class Recording:
    id: str
    path: str
    artist: str
    genre: str
    title: str
    lyrics: str  # a .txt path, or "" (no lyrics)
    language: str

    def manifest_row(self) -> dict[str, str]:
        return {"path": self.path, "artist": self.artist, "genre": self.genre, "lyrics": self.lyrics,
                "title": self.title, "language": self.language, "id": self.id}


def recordings(jamendo: Path = JAMENDO, librosa: Path = LIBROSA) -> list[Recording]:
    """The three lyric songs (metadata order), then the seven without lyrics (manifest order)."""
    out = []
    with open(jamendo / "JamendoLyrics.csv", newline="", encoding="utf-8") as fh:
        for m in csv.DictReader(fh):
            stem = Path(m["Filepath"]).stem
            out.append(Recording(stem, str(jamendo / "mp3" / m["Filepath"]), m["Artist"], m["Genre"], m["Title"],
                                 str(jamendo / "lyrics" / f"{stem}.txt"), m["Language"]))
    if (librosa / "manifest.csv").exists():
        with open(librosa / "manifest.csv", newline="", encoding="utf-8") as fh:
            for m in csv.DictReader(fh):
                out.append(Recording(Path(m["path"]).stem, str(librosa / m["path"]), m["artist"], m["genre"], m["title"],
                                     m["lyrics"], m["language"]))
    return out


def make_folds(recs: list[Recording], folds: int = 5, rotate: int = 0) -> list[list[Recording]]:
    """The held-out recordings of each fold: every recording held out exactly once."""
    lyric = [r for r in recs if r.lyrics]
    others = [r for r in recs if not r.lyrics]
    if not 2 <= folds <= len(recs):
        raise ValueError(f"folds must be between 2 and {len(recs)} (the recordings), got {folds}")
    if len(lyric) > folds:
        raise ValueError(f"{len(lyric)} lyric songs cannot each be held out in a different fold of {folds}")
    if others:
        shift = rotate % len(others)
        others = others[shift:] + others[:shift]
    held: list[list[Recording]] = [[] for _ in range(folds)]
    for i, rec in enumerate(lyric + others):
        held[i % folds].append(rec)
    return held


def shards_of(work: Path, name: str, recs: list[Recording], aligner: str = "linear") -> Path:
    """These recordings preprocessed into shards of their own (vocabulary included), once."""
    from pipeline.demo_corpus import write_manifest

    out = work / f"shards-{name}"
    if not (out / "summary.json").exists():
        manifest = write_manifest(work / f"manifest-{name}.csv", [r.manifest_row() for r in recs])
        subprocess.run([sys.executable, str(ROOT / "jobs" / "preprocess.py"), "--input", str(manifest), "--output", str(out),
                        "--progress", "false", "--align.aligner", aligner, "--mlflow_tracking_uri", f"sqlite:///{work / 'pre.db'}"],
                       check=True, cwd=ROOT, capture_output=True)
    return out


class HeldOutLeak(AssertionError):
    """A held-out recording reached a training stage."""


def song_id(rec: Recording) -> str:
    from pipeline.preprocess.ingest import content_hash

    return content_hash(rec.path, 1 << 20)


def check_held_out(held_out: list[Recording], shards: Path | None = None, caches: tuple[Path, ...] = ()) -> dict:
    """Raises ``HeldOutLeak`` when a held-out recording is among the training shards' song and
    segment rows or the keys of a code cache (pitch-shifted variants included); returns what was
    checked."""
    from pipeline.data import code_cache
    from pipeline.data.shards import SEGMENTS, SONGS, read_table

    ids = {song_id(r): r.id for r in held_out}
    seen: dict[str, set[str]] = {}
    if shards is not None:
        for sub in (SONGS, SEGMENTS):
            table = read_table(Path(shards), sub, ["song_id"])
            seen[f"shards/{sub}"] = set(table["song_id"].to_pylist()) if table is not None else set()
    for cache in caches:
        seen[f"cache/{Path(cache).name}"] = {code_cache.split_key(k)[0] for k in code_cache.encoded_songs(Path(cache))}
    for where, keys in seen.items():
        leaked = sorted(ids[k] for k in keys & ids.keys())
        if leaked:
            raise HeldOutLeak(f"held-out recordings in {where}: {', '.join(leaked)}")
    return {where: len(keys) for where, keys in seen.items()}
