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
from pathlib import Path
from typing import Any

import pyarrow as pa
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


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    """The rows of a manifest; a row that cannot be read becomes ``{"__error__": reason}``. A file
    that cannot be read at all is a ConfigError, before any work starts."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # undecodable bytes are kept as surrogates and quarantine their row only (row_problem);
        # the field limit is raised so an oversized cell is a quarantined row, not a crash
        csv.field_size_limit(1 << 30)
        try:
            with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
                rows: list[Any] = list(csv.DictReader(fh))
        except csv.Error as exc:
            raise ConfigError(f"{path}: not a readable CSV manifest ({exc})") from None
        where = "manifest row {n}"
    elif suffix in (".jsonl", ".ndjson"):
        rows = []
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    rows.append({"__error__": f"manifest line {n} is not JSON: {exc}"})
                except RecursionError:
                    rows.append({"__error__": f"manifest line {n} nests too deep"})
            else:
                rows.append(None)  # keeps line numbers; dropped below
        where = "manifest line {n}"
    elif suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"{path}: not a readable Parquet manifest ({exc})") from None
        where = "manifest row {n}"
    else:
        raise ConfigError(f"{path}: a manifest must be .csv, .jsonl or .parquet")
    out = []
    for n, row in enumerate(rows, 1):
        if row is None:
            continue
        problem = row["__error__"] if isinstance(row, dict) and "__error__" in row else row_problem(row, where.format(n=n))
        if not problem:
            out.append(row)
            continue
        ref = next((row[k] for k in PATH_KEYS if isinstance(row, dict) and isinstance(row.get(k), str) and row[k]), "")
        # the row's audio path names the quarantined input when it is readable text itself
        out.append({"__error__": problem, "__line__": n, "__path__": "" if _text_problem(ref) else ref})
    return out


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


def confine(records: list[dict[str, Any]], root: Path | None) -> list[dict[str, Any]]:
    """Quarantine the inputs whose audio or lyrics file is outside the corpus root."""
    for rec in records:
        if rec["status"] != "ok":
            continue
        lyrics_file = rec["lyrics_ref"] if is_lyrics_file(rec["lyrics_ref"]) else ""
        which = "audio" if outside(rec["source"], root) else "lyrics" if outside(lyrics_file, root) else ""
        if which:
            quarantined_at_ingest(rec, f"{which} path is outside the corpus root {root} (--ingest.corpus_root)")
    return records


def list_inputs(input_path: str | Path, max_genre_words: int = 5, root: Path | None = None) -> list[dict[str, Any]]:
    """Every input the job must account for, in a stable order; with ``root``, a path that leaves
    it (``../``, absolute, a symlink) quarantines its input before anything reads it."""
    return confine(_list_inputs(input_path, max_genre_words), root)


def _list_inputs(input_path: str | Path, max_genre_words: int) -> list[dict[str, Any]]:
    path = Path(input_path).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"input {input_path} does not exist")
    records = []
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = f.relative_to(path)
            if any(part.startswith((".", "_")) for part in rel.parts) or f.suffix.lower() in SIDECAR_EXTENSIONS:
                continue
            meta: Any = {}
            sidecar = f.with_suffix(".json")
            if sidecar.exists():
                try:
                    meta = json.loads(sidecar.read_bytes().decode("utf-8-sig", errors="surrogateescape"))
                except (json.JSONDecodeError, RecursionError, OSError) as exc:
                    meta = {"__error__": f"sidecar {sidecar.name} is not JSON: {exc}"}
                problem = meta.get("__error__") if isinstance(meta, dict) else None
                problem = problem or row_problem(meta, f"sidecar {sidecar.name}")
                if problem:
                    records.append(quarantined_at_ingest(base_record(str(f)), problem))
                    continue
            lyrics = meta.get("lyrics")
            if lyrics is None and f.with_suffix(".txt").exists():
                lyrics = str(f.with_suffix(".txt"))
            elif isinstance(lyrics, str) and lyrics.lower().endswith(LYRICS_FILE_EXTENSIONS):
                lyrics = _resolve(lyrics, f.parent)
            records.append(base_record(str(f), input_id=meta.get("id"), title=meta.get("title"), artist=meta.get("artist"),
                                       genres=genre_words(meta.get("genre", meta.get("genres")), max_genre_words),
                                       language=meta.get("language"), lyrics_ref=lyrics))
        return records
    rows = _read_manifest(path)
    if rows and not any(k in rows[0] for k in PATH_KEYS) and "__error__" not in rows[0]:
        raise ConfigError(f"{path}: no audio column; expected one of {PATH_KEYS}, found {sorted(rows[0])}")
    for n, row in enumerate(rows, 1):
        ref = next((row[k] for k in PATH_KEYS if row.get(k)), None)
        if "__error__" in row or not ref:
            where = row.get("__path__")
            rec = base_record(_resolve(where, path.parent) if where else f"{path}#row={row.get('__line__', n)}")
            records.append(quarantined_at_ingest(rec, row.get("__error__", "manifest row has no audio path")))
            continue
        lyrics = row.get("lyrics") or ""
        if isinstance(lyrics, str) and "\n" not in lyrics and is_lyrics_file(lyrics.strip()):
            lyrics = _resolve(lyrics.strip(), path.parent)
        genre_value = next((row[k] for k in GENRE_KEYS if row.get(k) is not None), None)
        records.append(base_record(_resolve(str(ref), path.parent), input_id=row.get("id"), title=row.get("title"),
                                   artist=row.get("artist"), genres=genre_words(genre_value, max_genre_words),
                                   language=row.get("language"), lyrics_ref=lyrics))
    return records


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


def ingest_row(row: dict[str, Any], hash_chunk_bytes: int) -> dict[str, Any]:
    """Stat, check the format, hash, read lyrics: cheap checks before any decoding."""
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
    ext = Path(source).suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"unsupported format {ext or '(no extension)'}; supported: {' '.join(SUPPORTED_EXTENSIONS)}")
    out["song_id"] = content_hash(source, hash_chunk_bytes)
    lyrics = read_lyrics(row["lyrics_ref"]) if row["lyrics_ref"] else ""
    out.update(lyrics=lyrics, lyrics_missing=not lyrics)
    return out
