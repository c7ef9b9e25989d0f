"""Artist and genre vocabularies, written with the data and versioned.

Ids are append-only across versions: an artist or genre word keeps its id forever, new
ones get the next free id, so a model trained on version k reads data of version k+1.
Id 0 is ``unknown``: rare names (fewer songs than the min-count) and names a model has
not seen map to it. Names are matched case- and space-insensitively (NFKC casefold).
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from models.levels import UNKNOWN

MAX_GENRES = 5  # genre words per song the start token sums (the original's max_bow_genre_size)


def key(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def _latest(folder: Path) -> tuple[int, dict[str, Any] | None]:
    versions = sorted(int(p.stem.split("-v")[-1]) for p in folder.glob("vocab-v*.json")) if folder.exists() else []
    if not versions:
        return 0, None
    return versions[-1], json.loads((folder / f"vocab-v{versions[-1]}.json").read_text(encoding="utf-8"))


def latest_vocab(folder: Path) -> tuple[int, dict[str, Any] | None]:
    """(version, vocabulary) of the newest version in ``folder``; (0, None) when there is none."""
    return _latest(Path(folder))


def _grow(previous: dict[str, int], counts: Counter, min_count: int) -> dict[str, int]:
    ids = dict(previous) if previous else {UNKNOWN: 0}
    for name in sorted(counts, key=lambda n: (-counts[n], n)):  # frequent names first: stable, readable ids
        if name not in ids and counts[name] >= min_count:
            ids[name] = len(ids)
    return ids


def update_vocab(folder: Path, artists: list[str], genres: list[list[str]], min_artist_count: int,
                 min_genre_count: int, run_id: str) -> tuple[int, dict[str, Any]]:
    """Write a new version if the corpus added names; returns (version, vocab)."""
    version, prev = _latest(folder)
    artist_counts = Counter(key(a) for a in artists if a.strip())
    genre_counts = Counter(key(g) for gs in genres for g in set(gs) if g.strip())
    vocab = {
        "artists": _grow(prev["artists"] if prev else {}, artist_counts, min_artist_count),
        "genres": _grow(prev["genres"] if prev else {}, genre_counts, min_genre_count),
        "artist_counts": dict(sorted(artist_counts.items())),
        "genre_counts": dict(sorted(genre_counts.items())),
        "min_artist_count": min_artist_count,
        "min_genre_count": min_genre_count,
        "unknown_id": 0,
    }
    if prev and all(vocab[k] == prev.get(k) for k in ("artists", "genres", "artist_counts", "genre_counts")):
        return version, prev
    version += 1
    vocab.update(version=version, run_id=run_id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".vocab-v{version}.json.tmp"
    tmp.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, folder / f"vocab-v{version}.json")
    return version, vocab


def artist_id(vocab: dict[str, Any], name: str) -> int:
    return vocab["artists"].get(key(name), 0)


def genre_ids(vocab: dict[str, Any], words: list[str]) -> list[int]:
    return [vocab["genres"].get(key(w), 0) for w in words]
