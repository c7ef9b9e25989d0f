"""VQ-VAE codes of the whole corpus, once per VQ-VAE version: what the priors train on.

    <shards>/codes/<vqvae name>-v<version>-<run>/part-<song hash>.parquet   one row per song
    <shards>/codes/<vqvae name>-v<version>-<run>/cache.json                 written last: the cache is complete

The folder is keyed by the registered VQ-VAE version, so the same version reuses its codes
and a new version makes new ones beside them. Each song's part is written under
``_staging/`` and renamed, so a killed run resumes with the songs it has not encoded yet
(``encoded_songs``), and never reads a half-written part. A song that cannot be encoded is
recorded under ``quarantine/`` with its reason and listed in ``cache.json``. Encoding is a
Ray Data stage (``pipeline.data.encode``); this module only reads and writes.

A row carries what a training window needs: song id, level, the codes (int16), total
length in samples, artist and genre ids of the vocabulary version, and the vocabulary version.

A cache built with pitch shifts (``EncodeSettings.pitch_shifts``, augmentation for a small
corpus) also holds each song pitch-shifted by those semitones, as rows of their own keyed
``<song id>#pitch<shift>`` (``variant_key``). Such a cache is another folder
(``-pitch<shifts>``); training windows read every variant, held-out windows only the songs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODES, CACHE_FILE, STAGING, QUARANTINE = "codes", "cache.json", "_staging", "quarantine"
VARIANT_SEP = "#"

CODES_SCHEMA = pa.schema([
    ("song_id", pa.string()), ("level", pa.string()), ("hop_length", pa.int32()), ("codes", pa.list_(pa.int16())),
    ("num_tokens", pa.int64()), ("total_length", pa.int64()), ("sample_rate", pa.int32()),
    ("artist_id", pa.int32()), ("genre_ids", pa.list_(pa.int32())), ("vocab_version", pa.int32()),
])


def cache_folder(root: str | Path, vqvae_name: str, vqvae_version: str, vqvae_run_id: str = "",
                 pitch_shifts: tuple[float, ...] = ()) -> Path:
    """``root``: where a corpus's caches live (default ``<shards>/codes``). The MLflow run that made
    the version is in the name too: another tracking store's "version 1" is another model; so are
    the pitch shifts, when there are any."""
    name = f"{vqvae_name}-v{vqvae_version}" + (f"-{vqvae_run_id[:8]}" if vqvae_run_id else "")
    return Path(root) / (name + ("-pitch" + "_".join(f"{s:+g}" for s in pitch_shifts) if pitch_shifts else ""))


def variant_key(song_id: str, pitch_shift: float) -> str:
    """The cache key of a song pitch-shifted by ``pitch_shift`` semitones (0: the song itself)."""
    return f"{song_id}{VARIANT_SEP}pitch{pitch_shift:+g}" if pitch_shift else song_id


def split_key(key: str) -> tuple[str, float]:
    """(song id, pitch shift in semitones) of a cache key."""
    song_id, sep, variant = key.partition(VARIANT_SEP)
    return song_id, float(variant.removeprefix("pitch")) if sep else 0.0


def cache_id(folder: Path) -> str:
    """The id lineage tags carry: the VQ-VAE version and a hash of the complete cache's manifest."""
    meta = json.loads((folder / CACHE_FILE).read_text())
    return f"{folder.name}:{meta['sha256'][:12]}"


def _part_name(song_id: str) -> str:
    return f"part-{hashlib.sha1(song_id.encode()).hexdigest()[:16]}.parquet"


def encoded_songs(folder: Path) -> set[str]:
    """Songs whose part is committed (a killed run's staging leftovers are not)."""
    if not folder.is_dir():
        return set()
    return {pq.read_table(p, columns=["song_id"])["song_id"][0].as_py() for p in folder.glob("part-*.parquet")}


def write_song(folder: Path, row: dict[str, Any]) -> None:
    """One song's codes, atomically (staging file, then rename)."""
    staging = folder / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{_part_name(row['song_id'])}.{os.getpid()}"
    table = pa.Table.from_pylist([{**row, "codes": np.asarray(row["codes"], dtype=np.int16)}], schema=CODES_SCHEMA)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / _part_name(row["song_id"]))


def quarantine_song(folder: Path, key: str, stage: str, reason: str, kind: str) -> None:
    """A key that could not be encoded: recorded with its reason (atomically), never silently missing."""
    target = folder / QUARANTINE / _part_name(key).replace(".parquet", ".json")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"song_id": key, "stage": stage, "reason": reason, "kind": kind}))
    os.replace(tmp, target)


def quarantined_songs(folder: Path) -> dict[str, dict[str, str]]:
    """{key: record} of the keys quarantined so far."""
    return {r["song_id"]: r for r in (json.loads(p.read_text()) for p in sorted((folder / QUARANTINE).glob("part-*.json")))}


def complete(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Mark the cache complete: what made it, what was quarantined, and a hash of its parts (written last, atomically)."""
    parts = sorted(folder.glob("part-*.parquet"))
    meta = {**meta, "quarantined": sorted(quarantined_songs(folder).values(), key=lambda r: r["song_id"])}
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p.name.encode())
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    meta = {**meta, "songs": len(parts), "sha256": digest.hexdigest()}
    tmp = folder / f".{CACHE_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, folder / CACHE_FILE)
    shutil.rmtree(folder / STAGING, ignore_errors=True)
    return meta


def read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / CACHE_FILE
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class SongCodes:
    song_id: str
    codes: np.ndarray  # (num_tokens,) int64
    total_length: int
    artist_id: int
    genre_ids: list[int]


class CodeCache:
    """A complete cache in memory: codes of every song (the top level of a 4-minute song is ~80 kB)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        if self.meta is None:
            raise FileNotFoundError(f"no complete code cache at {self.folder} (no {CACHE_FILE})")
        table = pq.read_table([str(p) for p in sorted(self.folder.glob("part-*.parquet"))], schema=CODES_SCHEMA)
        self.songs = {r["song_id"]: SongCodes(r["song_id"], np.asarray(r["codes"], dtype=np.int64), r["total_length"],
                                              r["artist_id"], list(r["genre_ids"]) or [0])
                      for r in table.to_pylist()}

    @property
    def hop_length(self) -> int:
        return int(self.meta["hop_length"])
