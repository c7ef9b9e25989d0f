"""Reading a manifest (CSV, JSONL or Parquet) a row at a time, whatever its size: a row that
cannot be an input becomes ``{"__error__": reason}`` (quarantined, the rest go on); a file that
cannot be read at all, or is over the limits, is a ``ConfigError`` before any work.

A Parquet file is read row group by row group with its text as dictionaries, and each row's
size is computed from the dictionary before the row becomes Python: dictionary encoding lets
a file under 1 MB declare ~100 GB of text.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import ConfigError
from pipeline.data.lyrics import MAX_LYRICS_BYTES

PATH_KEYS = ("path", "uri", "audio", "file")


def _text_problem(value: Any) -> bool:
    """True for text that cannot be written as UTF-8: bytes that were not UTF-8 (read with
    surrogateescape) or a lone surrogate from a JSON escape."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, (list, tuple)):
        return any(_text_problem(v) for v in value)
    if isinstance(value, dict):
        return any(_text_problem(k) or _text_problem(v) for k, v in value.items())
    return False


def row_problem(row: Any, where: str) -> str | None:
    """Why one manifest row cannot be an input, or None: the row is quarantined, the rest go on."""
    if not isinstance(row, dict):
        return f"{where} is not a JSON object (got {type(row).__name__})"
    bad = [str(k) for k, v in row.items() if _text_problem(k) or _text_problem(v)]
    if bad:
        return f"{where} holds text that is not valid UTF-8 (column {bad[0]!r})"
    lyrics = row.get("lyrics")
    if isinstance(lyrics, str) and len(lyrics) > MAX_LYRICS_BYTES:
        return f"{where}: lyrics cell is over {MAX_LYRICS_BYTES // 1024} KB"
    return None


@dataclass(frozen=True)
class ManifestLimits:
    """What one manifest may cost before a row is read: its rows, and the bytes of text it decodes
    to (a Parquet file is compressed, and dictionary encoding lets 1 MB declare ~100 GB)."""

    max_rows: int = 10_000_000
    max_bytes: int = 8 << 30

    def count(self, path: Path, rows: int, text_bytes: int) -> None:
        if rows > self.max_rows:
            raise ConfigError(f"{path}: more than {self.max_rows:,} rows (--ingest.max_manifest_rows)")
        if text_bytes > self.max_bytes:
            raise ConfigError(f"{path}: more than {self.max_bytes:,} bytes of text (--ingest.max_manifest_mb)")


MAX_ROW_BYTES = MAX_LYRICS_BYTES + (64 << 10)  # a row holds its lyrics and some metadata: anything larger is refused


def _csv_rows(path: Path) -> Iterator[Any]:
    # undecodable bytes are kept as surrogates and quarantine their row only (row_problem); the field
    # limit lets an oversized cell through to be a quarantined row, not a crash (the file size is capped)
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        try:
            yield from csv.DictReader(fh)
        except csv.Error as exc:
            raise ConfigError(f"{path}: not a readable CSV manifest ({exc})") from None


def _jsonl_rows(path: Path) -> Iterator[Any]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8", errors="surrogateescape")
            if not line.strip():
                yield None  # keeps line numbers; dropped by the caller
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                yield {"__error__": f"manifest line {n} is not JSON: {exc}"}
            except RecursionError:
                yield {"__error__": f"manifest line {n} nests too deep"}


def _cell_bytes(column: pa.Array) -> np.ndarray:
    """Bytes of text in each cell of a column, counted without expanding dictionaries."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_dictionary(kind):
        sizes = _cell_bytes(column.dictionary)
        idx = column.indices.fill_null(0).to_numpy(zero_copy_only=False)
        return sizes[idx] if len(sizes) else np.zeros(len(column), np.int64)
    if pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        return pc.binary_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _cell_bytes(pc.list_flatten(column))
        parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
        return np.bincount(parents, weights=inner, minlength=len(column)).astype(np.int64)
    return np.zeros(len(column), np.int64)


def _parquet_rows(path: Path, limits: ManifestLimits) -> Iterator[Any]:
    """Row group by row group, text read as dictionaries and sized before a row becomes Python."""
    try:
        pf = pq.ParquetFile(path)
        limits.count(path, pf.metadata.num_rows, 0)
        text = [pf.schema.column(i).path for i in range(pf.metadata.num_columns)
                if pf.schema.column(i).physical_type == "BYTE_ARRAY"]
        pf = pq.ParquetFile(path, read_dictionary=text)
        batches = pf.iter_batches(batch_size=256)
        total = 0
        for batch in batches:
            sizes = sum((_cell_bytes(col) for col in batch.columns), np.zeros(batch.num_rows, np.int64))
            total += int(sizes.sum())
            limits.count(path, 0, total)
            too_big = sizes > MAX_ROW_BYTES
            if not too_big.any():
                yield from batch.to_pylist()
                continue
            for i in range(batch.num_rows):  # only the rows that fit become Python
                yield ({"__error__": f"manifest row holds {sizes[i]:,} bytes of text (at most {MAX_ROW_BYTES:,})"}
                       if too_big[i] else batch.slice(i, 1).to_pylist()[0])
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{path}: not a readable Parquet manifest ({exc})") from None


def read_manifest(path: Path, limits: ManifestLimits = ManifestLimits()) -> Iterator[dict[str, Any]]:
    """The rows of a manifest, streamed; a row that cannot be read becomes ``{"__error__": reason}``.
    A file that cannot be read at all, or is over the limits, is a ConfigError."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows, where = _csv_rows(path), "manifest row {n}"
    elif suffix in (".jsonl", ".ndjson"):
        rows, where = _jsonl_rows(path), "manifest line {n}"
    elif suffix == ".parquet":
        rows, where = _parquet_rows(path, limits), "manifest row {n}"
    else:
        raise ConfigError(f"{path}: a manifest must be .csv, .jsonl or .parquet")
    if suffix != ".parquet":
        limits.count(path, 0, path.stat().st_size)  # text on disk is the text it decodes to
    for n, row in enumerate(rows, 1):
        limits.count(path, n, 0)
        if row is None:
            continue
        problem = row["__error__"] if isinstance(row, dict) and "__error__" in row else row_problem(row, where.format(n=n))
        if not problem:
            yield row
            continue
        ref = next((row[k] for k in PATH_KEYS if isinstance(row, dict) and isinstance(row.get(k), str) and row[k]), "")
        # the row's audio path names the quarantined input when it is readable text itself
        yield {"__error__": problem, "__line__": n, "__path__": "" if _text_problem(ref) or len(ref) > 4096 else ref}
