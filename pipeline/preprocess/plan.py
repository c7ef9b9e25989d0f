"""What a run must do, decided without holding the corpus: inputs are streamed from the manifest
into Parquet files on the driver's disk, a batch at a time, and every decision is a set or an
array lookup, so a million-row manifest costs the driver a few hundred MB and a rerun's skip
check stays linear.

1. ``plan``: each listed input gets its ``input_index``. One whose file (path, size, mtime) is a
   committed song, or an input quarantined for its content under this config and unchanged
   since, is skipped from a ``stat`` alone: nothing reads or hashes it again.
2. The rest is hashed by the ingest stage (Ray) and written back here (``Spool``).
3. ``sort_out``: in input order, content already committed is skipped, the second copy of the
   same content in this run is a duplicate, what ingest quarantined is written as quarantine
   shards here, and the rest is pending for pass 2.
``Outcomes`` counts what became of every input and writes ``runs/<run>.inputs.parquet`` as it goes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.align import low_confidence_fallback
from pipeline.data import shards
from pipeline.preprocess.ingest import fingerprint

BATCH_ROWS = 10_000  # rows per Parquet batch written or read by the driver
_TEXT = ("source", "input_id", "title", "artist", "genres_json", "language", "lyrics_ref", "status", "stage", "error", "error_kind")
PLAN_SCHEMA = pa.schema([("input_index", pa.int64()), *((name, pa.string()) for name in _TEXT)])
INGESTED_SCHEMA = pa.schema([*PLAN_SCHEMA, ("file_size", pa.int64()), ("file_mtime_ns", pa.int64()), ("song_id", pa.string()),
                             ("lyrics", pa.string()), ("lyrics_missing", pa.bool_())])
OUTCOME_SCHEMA = pa.schema([("source", pa.string()), ("status", pa.string()), ("song_id", pa.string()), ("stage", pa.string()),
                            ("reason", pa.string())])
SHOWN_FAILURES = 50  # quarantined inputs kept for the console's table; the file has all of them


class ExistingOutput:
    """What the output already holds, as lookups: song ids, committed files, and the inputs
    quarantined for their content under this config (transient and internal failures, and rows
    of older runs without a kind, are retried)."""

    def __init__(self, out: Path, config_key: str):
        key = ["source", "file_size", "file_mtime_ns"]
        songs = shards.read_table(out, shards.SONGS, ["song_id", *key])
        self.committed: dict[tuple[str, int, int], str] = {} if songs is None else dict(
            zip(zip(*(songs[c].to_pylist() for c in key)), songs["song_id"].to_pylist()))
        self.song_ids = set(self.committed.values())
        self.quarantined: set[tuple[str, int, int]] = set()
        folder = out / shards.QUARANTINE
        for part in sorted(folder.glob("*.parquet")) if folder.exists() else []:
            if "config_key" not in pq.read_schema(part).names:  # written before the kinds existed
                continue
            # not the error texts: a million of them would cost the driver for nothing
            table = pq.read_table(part, columns=[*key, "error_kind", "config_key"])
            keep = table.filter(pc.and_(pc.equal(table["error_kind"], "input"), pc.equal(table["config_key"], config_key)))
            self.quarantined.update(zip(*(keep[c].to_pylist() for c in key), strict=True))

    def skip_reason(self, key: tuple[str, int, int]) -> tuple[str, str] | None:
        """(song_id, reason) when this input need not be read again, else None."""
        if key in self.committed:
            return self.committed[key], "song already in songs/ (same file, unchanged)"
        if key in self.quarantined:
            return "", "quarantined by an earlier run for its content, file and config unchanged since"
        return None


class ParquetAppender:
    """Rows appended to one Parquet file, ``rows`` at a time (one row group each); the file is made
    on the first write, so an appender that never got a row leaves nothing behind."""

    def __init__(self, path: Path, schema: pa.Schema, rows: int = BATCH_ROWS):
        self.path, self.schema, self.rows_per_write = path, schema, rows
        self.buffer: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.rows_per_write:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            if self.writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.writer = pq.ParquetWriter(self.path, self.schema)
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema), row_group_size=self.rows_per_write)
            self.rows += len(self.buffer)
            self.buffer = []

    def close(self) -> bool:
        """Whether a file was written."""
        self.flush()
        if self.writer is None:
            return False
        self.writer.close()
        self.writer = None
        return True


class Outcomes:
    """Every input's end (ok, quarantined, skipped_existing), counted and written as it comes."""

    def __init__(self, path: Path):
        self.path = path
        self.file = ParquetAppender(path.with_name(f".{path.name}.tmp"), OUTCOME_SCHEMA)
        self.counts: Counter[str] = Counter()
        self.by_stage: Counter[str] = Counter()
        self.aligned_by: Counter[str] = Counter()
        self.audio_seconds = 0.0
        self.failures: list[dict[str, Any]] = []

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            status = r["status"]
            self.counts[status] += 1
            if status == "ok":
                self.audio_seconds += r.get("duration_s") or 0.0
                method = r.get("alignment_method") or ""
                # a low-confidence fallback counts apart from songs aligned linearly by choice
                self.aligned_by["linear_low_confidence" if low_confidence_fallback(method) else method.split(" ")[0]] += 1
            elif status == "quarantined":
                self.by_stage[r["stage"]] += 1
                if len(self.failures) < SHOWN_FAILURES:
                    self.failures.append({k: r.get(k) for k in ("source", "stage", "error")})
            self.file.add({"source": r["source"], "status": status, "song_id": r.get("song_id") or "",
                           "stage": r.get("stage") or "", "reason": r.get("reason") or r.get("error") or ""})

    def skip(self, row: dict[str, Any], song_id: str, reason: str) -> None:
        self.add([{"source": row["source"], "status": "skipped_existing", "song_id": song_id, "reason": reason}])

    def close(self) -> Path | None:
        """The file, complete (renamed into place only now), or None when no input was seen."""
        if not self.file.close():
            return None
        os.replace(self.file.path, self.path)
        return self.path


class Spool:
    """Rows in Parquet files under one folder of the output's staging area (on the shared file
    system the shards already need): the driver writes and reads them a batch at a time, and Ray
    workers read their own row groups, so no row passes through the driver's memory twice."""

    def __init__(self, folder: Path, schema: pa.Schema, row_group_rows: int = 256):
        self.folder, self.schema = folder, schema
        self.appender = ParquetAppender(folder / "driver.parquet", schema, row_group_rows)
        self.written_elsewhere = 0  # rows in files Ray wrote here

    @classmethod
    def written_by_ray(cls, folder: Path, schema: pa.Schema) -> Spool:
        spool = cls(folder, schema)
        spool.written_elsewhere = sum(pq.ParquetFile(f).metadata.num_rows for f in spool.files())
        return spool

    @property
    def rows(self) -> int:
        return self.appender.rows + self.written_elsewhere

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet")) if self.folder.exists() else []

    def add(self, row: dict[str, Any]) -> None:
        self.appender.add(row)

    def close(self) -> Spool:
        self.appender.close()
        return self

    def batches(self, rows: int = BATCH_ROWS, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Every row in a stable order (files by name, then rows), ``rows`` at a time, typed as the schema."""
        schema = pa.schema([self.schema.field(c) for c in columns]) if columns else self.schema
        for f in self.files():
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=schema.names):
                yield pa.Table.from_batches([batch]).select(schema.names).cast(schema)

    def dataset(self):
        """A Ray Dataset of these rows, a block per row group, each read by the worker that processes it."""
        import ray

        groups = [{"file": str(f), "row_group": i} for f in self.files() for i in range(pq.ParquetFile(f).num_row_groups)]
        return ray.data.from_items(groups, override_num_blocks=max(1, len(groups))).map_batches(
            _read_row_groups, batch_size=1, batch_format="pyarrow", fn_kwargs={"schema": self.schema})


def _read_row_groups(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(pq.ParquetFile(f).read_row_group(i).select(schema.names).cast(schema)
                            for f, i in zip(batch["file"].to_pylist(), batch["row_group"].to_pylist(), strict=True))


def plan(inputs: Iterable[dict[str, Any]], existing: ExistingOutput, to_ingest: Spool, outcomes: Outcomes) -> int:
    """Number every input, skip what the output already accounts for, spool the rest; -> inputs seen."""
    n = 0
    for n, rec in enumerate(inputs, 1):
        rec["input_index"] = n - 1
        # an input refused while listing was recorded without a stat (its size and mtime are -1)
        key = (rec["source"], *fingerprint(rec["source"])) if rec["status"] == "ok" else (rec["source"], -1, -1)
        skip = existing.skip_reason(key)
        if skip:
            outcomes.skip(rec, *skip)
        else:
            to_ingest.add(rec)
    to_ingest.close()
    return n


QUARANTINE_KEEP = ("input_index", "source", "status", "stage", "error", "error_kind", "song_id", "input_id", "file_size",
                   "file_mtime_ns")  # what a quarantine row records: the lyrics and the rest are left behind


def decide(ingested: Spool, song_ids: set[str]) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Per row (file order): 0 go on, 1 its content is committed, 2 a duplicate of the row ``first_of``
    names (the first copy in input order); and the rows' sources. Arrow and numpy columns, not
    Python objects: ~100 bytes a row."""
    cols = ["input_index", "status", "song_id", "source"]
    table = pa.concat_tables(list(ingested.batches(columns=cols))) if ingested.rows else pa.table(
        {c: pa.array([], ingested.schema.field(c).type) for c in cols})
    n = table.num_rows
    ok = pc.equal(table["status"], "ok").to_numpy(zero_copy_only=False)
    committed = pc.is_in(table["song_id"], value_set=pa.array(sorted(song_ids), pa.string())).to_numpy(zero_copy_only=False)
    codes = pc.dictionary_encode(table["song_id"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    decision = np.zeros(n, np.int8)
    decision[ok & committed] = 1
    order = np.argsort(table["input_index"].to_numpy(), kind="stable")
    candidates = order[(ok & ~committed)[order]]  # positions of the rows that may be a first copy, in input order
    first_by_code = np.full(int(codes.max()) + 1 if n else 0, -1, np.int64)
    uniq, first_idx = np.unique(codes[candidates], return_index=True)
    first_by_code[uniq] = candidates[first_idx]
    first_of = np.full(n, -1, np.int64)
    dups = candidates[first_by_code[codes[candidates]] != candidates]
    decision[dups], first_of[dups] = 2, first_by_code[codes[dups]]
    return decision, first_of, table["source"].combine_chunks()


def sort_out(ingested: Spool, existing: ExistingOutput, pending: Spool, quarantine, outcomes: Outcomes) -> None:
    """Each hashed input, in input order: skipped (its content is committed), a duplicate of an
    earlier input of this run, quarantined already (``quarantine(rows)`` writes it), or pending."""
    decision, first_of, sources = decide(ingested, existing.song_ids)
    pos = 0
    held: list[dict[str, Any]] = []
    for batch in ingested.batches(rows=2_000):
        for row in batch.to_pylist():
            if decision[pos] == 1:
                outcomes.skip(row, row["song_id"], "song already in songs/")
            elif decision[pos] == 2:
                row.update(status="quarantined", stage="dedup", error_kind="input",
                           error=f"duplicate content: same audio as {sources[int(first_of[pos])].as_py()} (song_id {row['song_id']})")
                held.append({k: row[k] for k in QUARANTINE_KEEP})
            elif row["status"] != "ok":
                held.append({k: row[k] for k in QUARANTINE_KEEP})
            else:
                pending.add(row)
            pos += 1
        if len(held) >= BATCH_ROWS:
            quarantine(held)
            held = []
    if held:
        quarantine(held)
    pending.close()
