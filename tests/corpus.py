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
    add("corrupt.mp3", "ingest")  # its header is read before it is hashed
    mp3 = next(audio.glob("*.mp3"))
    data = mp3.read_bytes()
    (audio / "truncated.mp3").write_bytes(data[: len(data) // 2])
    add("truncated.mp3", "ingest", lyrics="half a song")  # no frame libsndfile can read in its first half
    (audio / "empty.wav").write_bytes(b"")
    add("empty.wav", "ingest")
    (audio / "notes.mp3").write_text("these are my notes, not audio\n" * 40)
    add("notes.mp3", "ingest")
    (audio / "song.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60")
    add("song.mid", "ingest")
    t = np.arange(int(4.0 * 22050)) / 22050
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(audio / "no_lyrics.wav", np.stack([tone, tone * 0.5], 1), 22050)
    add("no_lyrics.wav", "ok")
    rows[-1]["title"] = r"$\x$ \frac{"  # matplotlib would read it as maths: the report must still be drawn
    sf.write(audio / "ünïcödé_sông.flac", tone, 22050)  # mono, non-ASCII name, lyrics and artist
    add("ünïcödé_sông.flac", "ok", lyrics="Ça va? Ñandú — «déjà vu» 日本語の歌詞\nSchön, ĳ!", artist="Sigur Rós & Björk")
    shutil.copy(audio / Path(rows[0]["path"]).name, audio / f"copy_of_{Path(rows[0]['path']).name}")
    add(f"copy_of_{Path(rows[0]['path']).name}", "dedup", lyrics="same song, other name")
    sf.write(audio / "too_long.wav", np.zeros(int(130 * 8000), np.float32), 8000)  # 130 s: over the test's 120 s limit
    add("too_long.wav", "ingest")
    sf.write(audio / "too_short.wav", tone[:2000], 22050)
    add("too_short.wav", "decode")
    add("missing.wav", "ingest")
    rows.append({"path": "", "artist": "nobody", "genre": "", "lyrics": "", "title": "no path", "language": "", "id": "nopath"})
    expected["#row"] = "ingest"
    add_hostile_inputs(folder, audio, rows, expected, add, tone)
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(manifest, "ab") as fh:  # one row that is not UTF-8 (Latin-1 artist), last
        fh.write(b"audio/latin1.wav,Caf\xe9 Tacvba,rock,,latin1,,latin1\r\n")
    expected["latin1.wav"] = "ingest"
    return manifest, expected


# Each hostile kind, the stage that must quarantine it and words its reason must hold (issue 13);
# docs/reliability.md lists them with what the run did.
HOSTILE_REASONS = {
    "bomb_655khz_8ch.flac": "sample rate 655350 Hz is outside", "rate_1hz.wav": "sample rate 1 Hz is outside",
    "rate_768khz.wav": "sample rate 768000 Hz is outside", "nine_channels.wav": "9 channels",
    "nan_samples.wav": "NaN or infinite samples", "fifo.wav": "not a regular file", "folder.wav": "not a regular file",
    "fifo_lyrics.wav": "not a regular file", "huge_lyrics.wav": "over 128 KB", "huge_lyrics_cell.wav": "over 128 KB",
    "sparse_1tb.wav": "over the 32 GiB limit",
}


def add_hostile_inputs(folder: Path, audio: Path, rows: list, expected: dict, add, tone: np.ndarray) -> None:
    import os

    with sf.SoundFile(audio / "bomb_655khz_8ch.flac", "w", 655_350, 8, format="FLAC") as fh:  # 2 s; the real one is 1,200 s
        fh.write(np.zeros((2 * 655_350, 8), np.float32))
    add("bomb_655khz_8ch.flac", "ingest")
    sf.write(audio / "rate_1hz.wav", np.zeros((20, 2), np.float32), 1)
    add("rate_1hz.wav", "ingest")
    sf.write(audio / "rate_768khz.wav", np.zeros((768_000 * 3, 2), np.float32), 768_000)
    add("rate_768khz.wav", "ingest")
    sf.write(audio / "nine_channels.wav", np.zeros((44_100 * 3, 9), np.float32), 44_100)
    add("nine_channels.wav", "ingest")
    nan = np.stack([tone, tone], 1)
    nan[len(nan) // 2, 0] = np.nan
    sf.write(audio / "nan_samples.wav", nan, 22050, subtype="FLOAT")
    add("nan_samples.wav", "decode")
    os.mkfifo(audio / "fifo.wav")  # hashing it would wait for a writer forever
    add("fifo.wav", "ingest")
    (audio / "folder.wav").mkdir()
    add("folder.wav", "ingest")
    for name in ("fifo_lyrics.wav", "huge_lyrics.wav", "huge_lyrics_cell.wav"):
        sf.write(audio / name, np.stack([tone, -tone], 1) * (1 + len(name) / 100), 22050)  # distinct content each
    add("fifo_lyrics.wav", "ingest")
    os.mkfifo(folder / "lyrics" / "fifo_lyrics.wav.txt")
    rows[-1]["lyrics"] = "lyrics/fifo_lyrics.wav.txt"
    add("huge_lyrics.wav", "ingest", lyrics="la " * 60_000)
    add("huge_lyrics_cell.wav", "ingest")
    rows[-1]["lyrics"] = "na " * 50_000  # inline text, 150 KB
    with open(audio / "sparse_1tb.wav", "wb") as fh:  # 1 TiB that takes no disk: hashing it would read 1 TiB of zeros
        fh.write(b"RIFF")
    os.truncate(audio / "sparse_1tb.wav", 1 << 40)
    add("sparse_1tb.wav", "ingest")
    # odd Unicode in names: right-to-left override, zero-width space, combining accent (NFD), emoji
    for name in ("bidi_\u202eevil\u200b.wav", "cafe\u0301_\U0001f3b5.wav"):
        sf.write(audio / name, np.stack([tone, tone], 1) * (0.5 + len(name) / 100), 22050)
        add(name, "ok", lyrics="la la la", artist="Ünïcode \u202eArtist")


def write_jamendo_manifest(folder: Path) -> Path:
    """A manifest for the shared JamendoLyrics songs (lyrics given as .txt paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(REALDATA / "JamendoLyrics.csv", newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    rows = [{"path": str(REALDATA / "mp3" / m["Filepath"]), "artist": m["Artist"], "genre": m["Genre"],
             "lyrics": str(REALDATA / "lyrics" / (Path(m["Filepath"]).stem + ".txt")), "title": m["Title"],
             "language": m["Language"], "id": Path(m["Filepath"]).stem} for m in meta]
    from pipeline.demo_corpus import write_manifest

    return write_manifest(folder / "jamendo_manifest.csv", rows)


def write_large_manifest(path: Path, audio: list[Path], rows: int, seed: int = 0, max_lyrics: int = 3000) -> Path:
    """A manifest of ``rows`` rows naming a handful of real files in turn, each with its own inline
    lyrics (0 to ``max_lyrics`` characters): the shape of a million-song corpus's manifest, written
    a block at a time."""
    rng = np.random.default_rng(seed)
    words = np.array("la na oh love night fire rain heart dance stay away home light".split())
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "artist", "genre", "lyrics", "title", "id"])
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            lengths = rng.integers(0, max_lyrics // 5 + 1, n)
            pool = " ".join(rng.choice(words, 4 * (max_lyrics // 5 + 1)))
            writer.writerows([str(audio[(start + i) % len(audio)]), f"artist {(start + i) % 997}", "pop rock",
                              pool[: lengths[i] * 5].strip(), f"song {start + i}", f"id{start + i}"] for i in range(n))
    return path
