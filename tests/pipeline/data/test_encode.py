"""Encoding is a stage like the preprocessing ones: a song that cannot be encoded becomes a
quarantine row with its reason, recorded in the cache, and never ends the run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.data import code_cache
from pipeline.data.encode import EncodeSettings, EncodeStage


class _Stage(EncodeStage):
    """The stage with its set-up replaced: no registry, a stand-in encoder."""

    def setup(self) -> None:
        self.calls = 0

    def encode_song(self, key: str) -> np.ndarray:
        self.calls += 1
        if key == "corrupt":
            raise ValueError("FLAC segment 3 does not decode")
        if key == "lost":
            raise OSError("stale file handle")
        return np.arange(5) % 3


def test_a_failing_song_is_a_quarantine_row_and_the_others_go_on():
    stage = _Stage("models:/v/1", "sqlite:///x.db", "shards", EncodeSettings())
    rows = stage(pa.Table.from_pylist([{"song_id": k, "status": "ok"} for k in ("good", "corrupt", "lost")])).to_pylist()
    by = {r["song_id"]: r for r in rows}
    assert by["good"]["status"] == "ok" and by["good"]["codes"] == [0, 1, 2, 0, 1] and by["good"]["error"] == ""
    assert (by["corrupt"]["status"], by["corrupt"]["stage"], by["corrupt"]["error_kind"]) == ("quarantined", "encode", "input")
    assert "does not decode" in by["corrupt"]["error"] and by["corrupt"]["codes"] == []
    assert by["lost"]["error_kind"] == "transient"
    assert stage.resources() == {"num_cpus": 1.0, "num_gpus": 0.0} and stage.uses_actors


def test_the_cache_records_what_was_quarantined_and_completes(tmp_path):
    folder = tmp_path / "cache"
    code_cache.write_song(folder, {"song_id": "good", "level": "top", "hop_length": 128, "codes": [1, 2], "num_tokens": 2,
                                   "total_length": 256, "sample_rate": 44100, "artist_id": 0, "genre_ids": [0], "vocab_version": 1})
    code_cache.quarantine_song(folder, "corrupt", "encode", "FLAC segment 3 does not decode", "input")
    assert set(code_cache.quarantined_songs(folder)) == {"corrupt"} and code_cache.encoded_songs(folder) == {"good"}
    meta = code_cache.complete(folder, {"level": "top", "hop_length": 128})
    assert meta["songs"] == 1 and meta["quarantined"] == [{"song_id": "corrupt", "stage": "encode", "kind": "input",
                                                           "reason": "FLAC segment 3 does not decode"}]
    assert code_cache.CodeCache(folder).songs.keys() == {"good"}
