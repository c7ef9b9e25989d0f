"""Test corpora: the synthetic demo songs plus every kind of broken input the job must survive."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.demo_corpus import make_demo_corpus

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "jamendo"


def make_broken_corpus(folder: Path, songs: int = 3, seconds: float = 8.0) -> tuple[Path, dict[str, str]]:
    """Demo songs + broken inputs; returns (manifest, {file name: expected outcome})."""
    manifest = make_demo_corpus(folder, songs=songs, seconds=seconds)
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected = {Path(r["path"]).name: "ok" for r in rows}
    audio = folder / "audio"
    rng = np.random.default_rng(1)

    def add(name: str, outcome: str, lyrics: str = "", artist: str = "Broken Band", genre: str = "noise") -> None:
        lyr = ""
        if lyrics:
            (folder / "lyrics" / f"{name}.txt").write_text(lyrics, encoding="utf-8")
            lyr = f"lyrics/{name}.txt"
        rows.append({"path": f"audio/{name}", "artist": artist, "genre": genre, "lyrics": lyr, "title": name,
                     "language": "", "id": name})
        expected[name] = outcome

    (audio / "corrupt.mp3").write_bytes(rng.bytes(40_000))
    add("corrupt.mp3", "decode")
    mp3 = next(audio.glob("*.mp3"))
    data = mp3.read_bytes()
    (audio / "truncated.mp3").write_bytes(data[: len(data) // 2])
    add("truncated.mp3", "decode", lyrics="half a song")
    (audio / "empty.wav").write_bytes(b"")
    add("empty.wav", "ingest")
    (audio / "notes.mp3").write_text("these are my notes, not audio\n" * 40)
    add("notes.mp3", "decode")
    (audio / "song.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60")
    add("song.mid", "ingest")
    t = np.arange(int(4.0 * 22050)) / 22050
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(audio / "no_lyrics.wav", np.stack([tone, tone * 0.5], 1), 22050)
    add("no_lyrics.wav", "ok")
    sf.write(audio / "ünïcödé_sông.flac", tone, 22050)  # mono, non-ASCII name, lyrics and artist
    add("ünïcödé_sông.flac", "ok", lyrics="Ça va? Ñandú — «déjà vu» 日本語の歌詞\nSchön, ĳ!", artist="Sigur Rós & Björk")
    shutil.copy(audio / Path(rows[0]["path"]).name, audio / f"copy_of_{Path(rows[0]['path']).name}")
    add(f"copy_of_{Path(rows[0]['path']).name}", "dedup", lyrics="same song, other name")
    sf.write(audio / "too_long.wav", np.zeros(int(130 * 8000), np.float32), 8000)  # 130 s: over the test's 120 s limit
    add("too_long.wav", "decode")
    sf.write(audio / "too_short.wav", tone[:2000], 22050)
    add("too_short.wav", "decode")
    add("missing.wav", "ingest")
    rows.append({"path": "", "artist": "nobody", "genre": "", "lyrics": "", "title": "no path", "language": "", "id": "nopath"})
    expected["#row"] = "ingest"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest, expected


def write_jamendo_manifest(folder: Path) -> Path:
    """A manifest for the shared JamendoLyrics songs (lyrics given as .txt paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(REALDATA / "JamendoLyrics.csv", newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    rows = [{"path": str(REALDATA / "mp3" / m["Filepath"]), "artist": m["Artist"], "genre": m["Genre"],
             "lyrics": str(REALDATA / "lyrics" / (Path(m["Filepath"]).stem + ".txt")), "title": m["Title"],
             "language": m["Language"], "id": Path(m["Filepath"]).stem} for m in meta]
    out = folder / "jamendo_manifest.csv"
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out
