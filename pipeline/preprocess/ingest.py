"""Ingest: a manifest or a folder walk -> one input record per song, then (as a Ray stage)
the content hash that gives a stable ``song_id``, the lyrics text and the file fingerprint.

Manifest columns (CSV, JSONL or Parquet): ``path`` (or ``uri``), ``artist``, ``genre``
(one or several words; a list in JSONL/Parquet), ``lyrics`` (the text, or a path to a
.txt file), optional ``title``, ``language``, ``id``. Relative paths are relative to the
manifest. A folder walk takes every non-sidecar file below the folder as an input;
``<name>.json`` beside ``<name>.<ext>`` gives its metadata and ``<name>.txt`` its lyrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.audio import SUPPORTED_EXTENSIONS
from pipeline.config import ConfigError
from pipeline.data.lyrics import (  # noqa: F401 (normalise_lyrics re-exported)
    LYRICS_FILE_EXTENSIONS,
    MAX_LYRICS_BYTES,
    is_lyrics_file,
    normalise_lyrics,
    read_lyrics,
)
from pipeline.preprocess.manifest import MAX_ROW_BYTES, PATH_KEYS, ManifestLimits, read_manifest, row_problem

SIDECAR_EXTENSIONS = {".json", ".txt", ".lrc", ".csv", ".jsonl", ".parquet", ".md", ".yaml", ".yml"}
GENRE_KEYS = ("genre", "genres")
MAX_SIDECAR_BYTES = MAX_ROW_BYTES


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
    for n, row in enumerate(read_manifest(path, limits), 1):
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
