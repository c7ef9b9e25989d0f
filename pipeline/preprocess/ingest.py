"""Ingest: a manifest or a folder walk -> one input record per song, then (as a Ray stage)
the content hash that gives a stable ``song_id``, the lyrics text and the file fingerprint.

Manifest columns (CSV, JSONL or Parquet): ``path`` (or ``uri``), ``artist``, ``genre``
(one or several words; a list in JSONL/Parquet), ``lyrics`` (the text, or a path to a
.txt file), optional ``title``, ``language``, ``id``. Relative paths are relative to the
manifest. A folder walk takes every non-sidecar file below the folder as an input;
``<name>.json`` beside ``<name>.<ext>`` gives its metadata and ``<name>.txt`` its lyrics.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.audio import SUPPORTED_EXTENSIONS
from pipeline.config import ConfigError
from pipeline.data.lyrics import (  # noqa: F401 (normalise_lyrics re-exported)
    LYRICS_FILE_EXTENSIONS,
    MAX_LYRICS_BYTES,
    is_lyrics_file,
    normalise_lyrics,
    read_lyrics,
)

SIDECAR_EXTENSIONS = {".json", ".txt", ".lrc", ".csv", ".jsonl", ".parquet", ".md", ".yaml", ".yml"}
PATH_KEYS, GENRE_KEYS = ("path", "uri", "audio", "file"), ("genre", "genres")


def base_record(source: str, **meta: Any) -> dict[str, Any]:
    """Every row of the stream has these columns from the start (no nulls: Arrow-friendly)."""
    genres = meta.get("genres") or []
    return {
        "source": source,
        "input_id": str(meta.get("input_id") or ""),
        "title": str(meta.get("title") or ""),
        "artist": normalise_text(str(meta.get("artist") or "")),
        "genres_json": json.dumps(genres, ensure_ascii=False),
        "language": str(meta.get("language") or ""),
        "lyrics_ref": str(meta.get("lyrics_ref") or ""),
        "status": "ok",
        "stage": "",
        "error": "",
        "error_kind": "",
    }


def quarantined_at_ingest(rec: dict[str, Any], error: str) -> dict[str, Any]:
    """An input refused before anything reads it: for its content, so a rerun skips it while unchanged."""
    rec.update(status="quarantined", stage="ingest", error=error, error_kind="input")
    return rec


def normalise_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def genre_words(value: Any, max_words: int) -> list[str]:
    """A bag of genre words: 'Pop Rock; indie' -> ['pop', 'rock', 'indie']."""
    if value is None:
        return []
    parts = value if isinstance(value, (list, tuple)) else re.split(r"[,;/|\s]+", str(value))
    words: list[str] = []
    for p in parts:
        for w in re.split(r"[,;/|\s]+", str(p)):
            w = normalise_text(w).casefold()
            if w and w not in words:
                words.append(w)
    return words[:max_words]


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
MAX_SIDECAR_BYTES = MAX_ROW_BYTES


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


def _read_manifest(path: Path, limits: ManifestLimits = ManifestLimits()) -> Iterator[dict[str, Any]]:
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


def _resolve(ref: str, base: Path) -> str:
    if "://" in ref:
        return ref[len("file://"):] if ref.startswith("file://") else ref
    p = Path(ref).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def outside(ref: str, root: Path | None) -> bool:
    """True when a path (symlinks followed) leaves ``root``; any URI other than a local path does."""
    if root is None or not ref:
        return False
    return "://" in ref or not Path(os.path.realpath(ref)).is_relative_to(os.path.realpath(root))


def confine(records: Iterable[dict[str, Any]], root: Path | None) -> Iterator[dict[str, Any]]:
    """Quarantine the inputs whose audio or lyrics file is outside the corpus root."""
    for rec in records:
        if rec["status"] == "ok":
            lyrics_file = rec["lyrics_ref"] if is_lyrics_file(rec["lyrics_ref"]) else ""
            which = "audio" if outside(rec["source"], root) else "lyrics" if outside(lyrics_file, root) else ""
            if which:
                quarantined_at_ingest(rec, f"{which} path is outside the corpus root {root} (--ingest.corpus_root)")
        yield rec


def iter_inputs(input_path: str | Path, max_genre_words: int = 5, root: Path | None = None,
                limits: ManifestLimits = ManifestLimits()) -> Iterator[dict[str, Any]]:
    """Every input the job must account for, in a stable order, one at a time (a manifest of a
    million rows is never held whole); with ``root``, a path that leaves it (``../``, absolute, a
    symlink) quarantines its input before anything reads it. Config errors (no such input, no
    audio column, over the limits) are raised by the first ``next()`` or where they are found."""
    path = Path(input_path).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"input {input_path} does not exist")
    yield from confine(_walk(path, max_genre_words, root) if path.is_dir() else _manifest(path, max_genre_words, limits), root)


def list_inputs(input_path: str | Path, max_genre_words: int = 5, root: Path | None = None,
                limits: ManifestLimits = ManifestLimits()) -> list[dict[str, Any]]:
    return list(iter_inputs(input_path, max_genre_words, root, limits))


def _sidecar(path: Path, root: Path | None) -> Any:
    """A folder walk's ``<name>.json``: only a regular file inside the corpus root, of bounded size."""
    if outside(str(path), root):
        return {"__error__": f"sidecar {path.name} is outside the corpus root {root} (--ingest.corpus_root)"}
    if not path.is_file():  # a FIFO would hang the driver, /dev/zero fill its memory
        return {"__error__": f"sidecar {path.name} is not a regular file"}
    with open(path, "rb") as fh:
        raw = fh.read(MAX_SIDECAR_BYTES + 1)
    if len(raw) > MAX_SIDECAR_BYTES:
        return {"__error__": f"sidecar {path.name} is over {MAX_SIDECAR_BYTES // 1024} KB"}
    try:
        return json.loads(raw.decode("utf-8-sig", errors="surrogateescape"))
    except (json.JSONDecodeError, RecursionError) as exc:
        return {"__error__": f"sidecar {path.name} is not JSON: {exc}"}


def _walk(path: Path, max_genre_words: int, root: Path | None) -> Iterator[dict[str, Any]]:
    # anything that is not a folder is an input: a FIFO or a device with an audio name is quarantined
    # by ingest ("not a regular file"), not silently left out
    for f in sorted(p for p in path.rglob("*") if not p.is_dir()):
        rel = f.relative_to(path)
        if any(part.startswith((".", "_")) for part in rel.parts) or f.suffix.lower() in SIDECAR_EXTENSIONS:
            continue
        meta: Any = {}
        sidecar = f.with_suffix(".json")
        if os.path.lexists(sidecar):
            try:
                meta = _sidecar(sidecar, root)
            except OSError as exc:
                meta = {"__error__": f"sidecar {sidecar.name} cannot be read: {exc}"}
            problem = meta.get("__error__") if isinstance(meta, dict) else None
            problem = problem or row_problem(meta, f"sidecar {sidecar.name}")
            if problem:
                yield quarantined_at_ingest(base_record(str(f)), problem)
                continue
        lyrics = meta.get("lyrics")
        if lyrics is None and os.path.lexists(f.with_suffix(".txt")):
            lyrics = str(f.with_suffix(".txt"))
        elif isinstance(lyrics, str) and lyrics.lower().endswith(LYRICS_FILE_EXTENSIONS):
            lyrics = _resolve(lyrics, f.parent)
        yield base_record(str(f), input_id=meta.get("id"), title=meta.get("title"), artist=meta.get("artist"),
                          genres=genre_words(meta.get("genre", meta.get("genres")), max_genre_words),
                          language=meta.get("language"), lyrics_ref=lyrics)


def _manifest(path: Path, max_genre_words: int, limits: ManifestLimits) -> Iterator[dict[str, Any]]:
    for n, row in enumerate(_read_manifest(path, limits), 1):
        if n == 1 and not any(k in row for k in PATH_KEYS) and "__error__" not in row:
            raise ConfigError(f"{path}: no audio column; expected one of {PATH_KEYS}, found {sorted(row)}")
        ref = next((row[k] for k in PATH_KEYS if row.get(k)), None)
        if "__error__" in row or not ref:
            where = row.get("__path__")
            rec = base_record(_resolve(where, path.parent) if where else f"{path}#row={row.get('__line__', n)}")
            yield quarantined_at_ingest(rec, row.get("__error__", "manifest row has no audio path"))
            continue
        lyrics = row.get("lyrics") or ""
        if isinstance(lyrics, str) and "\n" not in lyrics and is_lyrics_file(lyrics.strip()):
            lyrics = _resolve(lyrics.strip(), path.parent)
        genre_value = next((row[k] for k in GENRE_KEYS if row.get(k) is not None), None)
        yield base_record(_resolve(str(ref), path.parent), input_id=row.get("id"), title=row.get("title"),
                          artist=row.get("artist"), genres=genre_words(genre_value, max_genre_words),
                          language=row.get("language"), lyrics_ref=lyrics)


def fingerprint(source: str) -> tuple[int, int]:
    """(size, mtime_ns): what decides whether a quarantined input changed since."""
    try:
        st = os.stat(source)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def content_hash(source: str, chunk: int) -> str:
    """song_id: the same bytes under two names are one song."""
    h = hashlib.blake2b(digest_size=16)
    with open(source, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def ingest_row(row: dict[str, Any], hash_chunk_bytes: int, max_file_bytes: int = 32 << 30,
               check_header: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stat, check the size, the format and the header, then hash and read lyrics: every cheap
    refusal comes before reading the whole file (a sparse 1 TB file is refused from its size)."""
    source = row["source"]
    size, mtime = fingerprint(source)
    row.update(file_size=size, file_mtime_ns=mtime)  # kept even when this input is quarantined below
    out: dict[str, Any] = {}
    if size < 0:
        raise FileNotFoundError(f"audio file not found: {source}")
    if not os.path.isfile(source):  # hashing a FIFO or a device would block or never end
        raise ValueError("not a regular file (a folder, FIFO or device)")
    if size == 0:
        raise ValueError("empty file (0 bytes)")
    if size > max_file_bytes:
        raise ValueError(f"file is {size / 2**30:,.1f} GiB, over the {max_file_bytes / 2**30:g} GiB limit (--ingest.max_file_gb)")
    ext = Path(source).suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"unsupported format {ext or '(no extension)'}; supported: {' '.join(SUPPORTED_EXTENSIONS)}")
    if check_header is not None:
        check_header(source)
    out["song_id"] = content_hash(source, hash_chunk_bytes)
    lyrics = read_lyrics(row["lyrics_ref"]) if row["lyrics_ref"] else ""
    out.update(lyrics=lyrics, lyrics_missing=not lyrics)
    return out
