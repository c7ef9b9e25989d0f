"""The Parquet shards that training streams: layout, atomic writing, random-window reading.

    <out>/songs/part-<run>-<n>.parquet       one row per song: metadata, lyrics, alignment
    <out>/segments/part-<run>-<n>.parquet    the audio: fixed-length segments of each song
    <out>/quarantine/part-<run>-<n>.parquet  one row per rejected input: source, stage, error
    <out>/vocab/, manifest.json, summary.json, runs/<run>.json

A shard is committed by renames, segments then quarantine then songs: a song exists when
its songs row does. Files are written under ``_staging/`` first (ignored by Parquet
dataset discovery), so a killed run leaves nothing half-written in view; the next run
removes staging leftovers and segments files whose songs file never landed, then
processes whatever is not yet in ``songs/``.

Segments are stored in song order, ``segments_per_row_group`` per Parquet row group, and
each songs row says which file and row its first segment is in, so reading a window
touches only the one or two row groups that hold it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audio import TARGET_SAMPLE_RATE, decode_segment, encode_segment, from_bytes

SONGS, SEGMENTS, QUARANTINE, STAGING = "songs", "segments", "quarantine", "_staging"

SONGS_SCHEMA = pa.schema([
    ("song_id", pa.string()), ("source", pa.string()), ("input_id", pa.string()), ("title", pa.string()),
    ("artist", pa.string()), ("genres", pa.list_(pa.string())), ("language", pa.string()),
    ("lyrics", pa.string()), ("lyrics_missing", pa.bool_()),
    ("sample_rate", pa.int32()), ("num_samples", pa.int64()), ("channels", pa.int8()), ("duration_s", pa.float64()),
    ("mono_source", pa.bool_()), ("source_sample_rate", pa.int32()), ("source_channels", pa.int16()),
    ("source_format", pa.string()), ("file_size", pa.int64()), ("file_mtime_ns", pa.int64()), ("peak", pa.float32()),
    ("audio_encoding", pa.string()), ("segment_samples", pa.int32()), ("num_segments", pa.int32()),
    ("segments_file", pa.string()), ("first_segment_row", pa.int64()), ("segments_per_row_group", pa.int32()),
    ("separator", pa.string()), ("separator_version", pa.string()),
    ("vocal_activity", pa.list_(pa.bool_())), ("vocal_activity_hop_s", pa.float32()), ("vocal_activity_ratio", pa.float32()),
    ("alignment_method", pa.string()), ("alignment_confidence", pa.float32()), ("alignment_coverage", pa.float32()),
    ("alignment_language", pa.string()), ("alignment_notes", pa.string()),
    ("char_onsets", pa.list_(pa.float32())), ("word_char_starts", pa.list_(pa.int32())), ("word_onsets", pa.list_(pa.float32())),
    ("run_id", pa.string()),
])
SEGMENTS_SCHEMA = pa.schema([
    ("song_id", pa.string()), ("segment_index", pa.int32()), ("start_sample", pa.int64()),
    ("num_samples", pa.int32()), ("audio", pa.binary()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("source", pa.string()), ("stage", pa.string()), ("error", pa.string()), ("song_id", pa.string()),
    ("input_id", pa.string()), ("file_size", pa.int64()), ("file_mtime_ns", pa.int64()), ("run_id", pa.string()),
    # what decides whether a rerun skips it: an "input" error under the same config_key is not retried
    ("error_kind", pa.string()), ("config_key", pa.string()),
])


@dataclass
class ShardLayout:
    encoding: str
    segment_samples: int
    segments_per_row_group: int
    compression: str = "none"
    config_key: str = ""  # the settings that decide what is quarantined (run.quarantine_config_key)


def _vec(data: bytes, dtype: str) -> list:
    return np.frombuffer(data, dtype=dtype).tolist() if data else []


def _song_row(row: dict[str, Any], layout: ShardLayout, segments_file: str, first_row: int, run_id: str) -> dict[str, Any]:
    n = int(row["num_samples"])
    return {
        "song_id": row["song_id"], "source": row["source"], "input_id": row["input_id"], "title": row["title"],
        "artist": row["artist"], "genres": json.loads(row["genres_json"]), "language": row["language"],
        "lyrics": row["lyrics"], "lyrics_missing": bool(row["lyrics_missing"]),
        "sample_rate": TARGET_SAMPLE_RATE, "num_samples": n, "channels": 2, "duration_s": n / TARGET_SAMPLE_RATE,
        "mono_source": row["source_channels"] == 1, "source_sample_rate": row["source_sample_rate"],
        "source_channels": row["source_channels"], "source_format": row["source_format"],
        "file_size": row["file_size"], "file_mtime_ns": row["file_mtime_ns"], "peak": row["peak"],
        "audio_encoding": layout.encoding, "segment_samples": layout.segment_samples,
        "num_segments": -(-n // layout.segment_samples), "segments_file": segments_file, "first_segment_row": first_row,
        "segments_per_row_group": layout.segments_per_row_group,
        "separator": row["separator"], "separator_version": row["separator_version"],
        "vocal_activity": np.frombuffer(row["vocal_activity"], dtype=np.uint8).astype(bool).tolist(),
        "vocal_activity_hop_s": row["vocal_activity_hop_s"], "vocal_activity_ratio": row["vocal_activity_ratio"],
        "alignment_method": row["alignment_method"], "alignment_confidence": row["alignment_confidence"],
        "alignment_coverage": row["alignment_coverage"], "alignment_language": row["alignment_language"],
        "alignment_notes": row["alignment_notes"], "char_onsets": _vec(row["char_onsets"], "<f4"),
        "word_char_starts": _vec(row["word_char_starts"], "<i4"), "word_onsets": _vec(row["word_onsets"], "<f4"),
        "run_id": run_id,
    }


def write_shard(rows: list[dict[str, Any]], out: Path, run_id: str, layout: ShardLayout) -> str:
    """Write one shard (songs + segments + quarantine for these rows) and commit it.

    The part's name is a function of the run and its rows' inputs: a write task that Ray runs
    again (its node was lost after the commit, before its result came back) replaces the same
    files instead of committing its songs twice."""
    inputs = ",".join(str(r.get("input_index", r.get("source"))) for r in rows)
    part = f"part-{run_id}-{hashlib.blake2b(inputs.encode(), digest_size=6).hexdigest()}.parquet"
    staging = out / STAGING / run_id
    for sub in (SONGS, SEGMENTS, QUARANTINE):
        (staging / sub).mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] != "ok"]
    staged: list[str] = []
    if ok:
        songs, segments = [], {name: [] for name in SEGMENTS_SCHEMA.names}
        for row in ok:
            songs.append(_song_row(row, layout, f"{SEGMENTS}/{part}", len(segments["song_id"]), run_id))
            samples = from_bytes(row["audio"])
            for i, start in enumerate(range(0, len(samples), layout.segment_samples)):
                chunk = samples[start:start + layout.segment_samples]
                segments["song_id"].append(row["song_id"])
                segments["segment_index"].append(i)
                segments["start_sample"].append(start)
                segments["num_samples"].append(len(chunk))
                segments["audio"].append(encode_segment(chunk, layout.encoding))
        pq.write_table(pa.table(segments, schema=SEGMENTS_SCHEMA), staging / SEGMENTS / part,
                       row_group_size=layout.segments_per_row_group, compression=layout.compression)
        pq.write_table(pa.Table.from_pylist(songs, schema=SONGS_SCHEMA), staging / SONGS / part, compression="zstd")
        staged += [SEGMENTS, SONGS]
    if bad:
        qrows = [{"source": r["source"], "stage": r["stage"], "error": r["error"], "song_id": r.get("song_id", ""),
                  "input_id": r["input_id"], "file_size": r.get("file_size", -1), "file_mtime_ns": r.get("file_mtime_ns", -1),
                  "run_id": run_id, "error_kind": r.get("error_kind", ""), "config_key": layout.config_key} for r in bad]
        pq.write_table(pa.Table.from_pylist(qrows, schema=QUARANTINE_SCHEMA), staging / QUARANTINE / part)
        staged.append(QUARANTINE)
    with _commit_lock(out):
        writer = (out / WRITER_FILE).read_text().strip() if (out / WRITER_FILE).exists() else run_id
        if writer != run_id:  # a worker of a killed run still alive: a newer run owns the output
            raise SupersededRun(f"run {run_id} was superseded by run {writer}: shard {part} is not committed")
        for sub in (SEGMENTS, QUARANTINE, SONGS):  # songs last: the commit point of the shard
            if sub in staged:
                (out / sub).mkdir(parents=True, exist_ok=True)
                os.replace(staging / sub / part, out / sub / part)
    return part


class SupersededRun(RuntimeError):
    """A shard of a run that a newer run has taken the output from."""


WRITER_FILE, COMMIT_LOCK = ".writer", ".commit.lock"


@contextlib.contextmanager
def _commit_lock(out: Path):
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / COMMIT_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def claim_output(out: Path, run_id: str) -> None:
    """Make ``run_id`` the only run that may commit to ``out``, before it looks at what is there.

    A killed run's driver is gone, but one of its Ray workers can outlive it by seconds and
    still commit a shard (seen: a song twice after a rerun). Commits check the claim under a
    lock, so once this returns no older run can add anything the new run has not seen."""
    with _commit_lock(out):
        (out / WRITER_FILE).write_text(run_id)


def recover(out: Path) -> dict[str, int]:
    """Undo what a killed run left behind: staging files and segments without songs."""
    removed = {"staging_files": 0, "orphan_segments": 0}
    staging = out / STAGING
    if staging.exists():
        removed["staging_files"] = sum(1 for p in staging.rglob("*") if p.is_file())
        shutil.rmtree(staging)
    songs = {p.name for p in (out / SONGS).glob("*.parquet")} if (out / SONGS).exists() else set()
    for seg in (out / SEGMENTS).glob("*.parquet") if (out / SEGMENTS).exists() else []:
        if seg.name not in songs:
            seg.unlink()
            removed["orphan_segments"] += 1
    return removed


def read_table(out: Path, sub: str, columns: list[str] | None = None) -> pa.Table | None:
    folder = out / sub
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    if not files:
        return None
    return pq.ParquetDataset([str(f) for f in files]).read(columns=columns)


def committed_parts(out: Path) -> list[dict[str, Any]]:
    """The shard manifest: every committed file with its rows and bytes."""
    parts = []
    for sub in (SONGS, SEGMENTS, QUARANTINE):
        for f in sorted((out / sub).glob("*.parquet")) if (out / sub).exists() else []:
            meta = pq.ParquetFile(f).metadata
            parts.append({"path": f"{sub}/{f.name}", "rows": meta.num_rows, "row_groups": meta.num_row_groups,
                          "bytes": f.stat().st_size})
    return parts


class ShardReader:
    """Random windows of any song, without Ray: what a training data loader needs.

    >>> reader = ShardReader("out")
    >>> audio = reader.read_window(song_id, offset=441_000, length=1_048_576)  # (length, 2) float32
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        table = read_table(self.out, SONGS, ["song_id", "num_samples", "audio_encoding", "segment_samples",
                                              "segments_file", "first_segment_row", "segments_per_row_group"])
        self.songs = {r["song_id"]: r for r in (table.to_pylist() if table is not None else [])}
        self._files: dict[str, pq.ParquetFile] = {}

    def _file(self, rel: str) -> pq.ParquetFile:
        if rel not in self._files:
            self._files[rel] = pq.ParquetFile(self.out / rel)
        return self._files[rel]

    def read_window(self, song_id: str, offset: int, length: int) -> np.ndarray:
        """Samples [offset, offset + length) of a song, zero-padded past its end."""
        song = self.songs[song_id]
        seg_len, per_group = song["segment_samples"], song["segments_per_row_group"]
        first_seg = offset // seg_len
        last_seg = min((offset + length - 1) // seg_len, -(-song["num_samples"] // seg_len) - 1)
        out = np.zeros((length, 2), dtype=np.float32)
        if first_seg > last_seg:
            return out
        rows = range(song["first_segment_row"] + first_seg, song["first_segment_row"] + last_seg + 1)
        groups = sorted({r // per_group for r in rows})
        table = self._file(song["segments_file"]).read_row_groups(groups, columns=["start_sample", "audio"])
        base = groups[0] * per_group
        for r in rows:
            start = table["start_sample"][r - base].as_py()
            seg = decode_segment(table["audio"][r - base].as_py(), song["audio_encoding"])
            lo, hi = max(offset, start), min(offset + length, start + len(seg))
            if hi > lo:  # a window that starts past the song's end overlaps nothing
                out[lo - offset:hi - offset] = seg[lo - start:hi - start]
        return out


def iter_song_rows(out: Path, columns: list[str] | None = None) -> Iterable[dict[str, Any]]:
    table = read_table(out, SONGS, columns)
    return table.to_pylist() if table is not None else []
