"""The learning benchmarks' folds: every recording held out once, each lyric song in a fold of
its own, and a held-out recording found wherever it reaches a training stage."""

from __future__ import annotations

import numpy as np
import pytest

from bench import folds
from bench.folds import HeldOutLeak, Recording, check_held_out, make_folds
from pipeline.data import code_cache, shards


def _recordings(tmp_path, lyric: int = 3, other: int = 7) -> list[Recording]:
    out = []
    for i in range(lyric + other):
        path = tmp_path / f"r{i}.wav"
        path.write_bytes(f"recording {i}".encode())  # distinct bytes: distinct content hashes
        out.append(Recording(f"r{i}", str(path), "A", "g", f"t{i}", str(tmp_path / f"r{i}.txt") if i < lyric else "", ""))
    return out


def test_every_recording_is_held_out_once_and_each_lyric_song_in_its_own_fold(tmp_path):
    recs = _recordings(tmp_path)
    for rotate in range(3):
        plan = make_folds(recs, 5, rotate)
        held = [r.id for fold in plan for r in fold]
        assert sorted(held) == sorted(r.id for r in recs) and len(held) == len(set(held))
        assert [len(f) for f in plan] == [2] * 5
        assert [sum(bool(r.lyrics) for r in f) for f in plan] == [1, 1, 1, 0, 0]
    pairs = [{frozenset(r.id for r in f) for f in make_folds(recs, 5, rotate)} for rotate in (0, 1)]
    assert pairs[0] != pairs[1]  # a rotation pairs the recordings differently
    with pytest.raises(ValueError, match="different fold"):
        make_folds(recs, 2)
    with pytest.raises(ValueError, match="folds must be"):
        make_folds(recs, 11)


def test_the_shared_corpus_makes_five_folds_of_two(realdata):
    recs = folds.recordings()
    if len(recs) < 10:
        pytest.skip("the seven recordings without lyrics are not beside the lyric songs")
    plan = make_folds(recs, 5)
    assert len(recs) == 10 and sum(bool(r.lyrics) for r in recs) == 3
    assert all(len(f) == 2 for f in plan) and len({r.id for f in plan for r in f}) == 10


def _shard_row(song_id: str) -> dict:
    from pipeline import audio as audio_io

    samples = np.zeros((2048, 2), np.float32)
    return {"status": "ok", "stage": "", "error": "", "song_id": song_id, "source": f"/x/{song_id}.wav", "input_id": song_id,
            "title": song_id, "artist": "A", "genres_json": '["pop"]', "language": "", "lyrics": "", "lyrics_missing": True,
            "num_samples": len(samples), "source_channels": 2, "source_sample_rate": 44100, "source_format": "WAV",
            "file_size": 10, "file_mtime_ns": 1, "peak": 0.5, "separator": "dsp", "separator_version": "1",
            "vocal_activity": bytes([0]), "vocal_activity_hop_s": 0.05, "vocal_activity_ratio": 0.0, "alignment_method": "none",
            "alignment_confidence": 0.0, "alignment_coverage": 0.0, "alignment_language": "", "alignment_notes": "",
            "char_onsets": b"", "word_char_starts": b"", "word_onsets": b"", "audio": audio_io.to_bytes(samples)}


def _code_row(key: str) -> dict:
    return {"song_id": key, "level": "top", "hop_length": 128, "codes": np.arange(16) % 7, "num_tokens": 16,
            "total_length": 2048, "sample_rate": 44100, "artist_id": 0, "genre_ids": [0], "vocab_version": 1}


def test_a_held_out_recording_in_the_training_rows_or_a_code_cache_is_caught(tmp_path):
    recs = _recordings(tmp_path, lyric=1, other=3)
    held, train = recs[:2], recs[2:]
    ids = {r.id: folds.song_id(r) for r in recs}
    layout = shards.ShardLayout("pcm16", 1024, 2)
    clean, leaky = tmp_path / "clean", tmp_path / "leaky"
    shards.write_shard([_shard_row(ids[r.id]) for r in train], clean, "r1", layout)
    shards.write_shard([_shard_row(ids[r.id]) for r in train + held[1:]], leaky, "r1", layout)
    cache = code_cache.cache_folder(tmp_path / "codes", "jukebox-vqvae-top", "1")
    for r in train:
        code_cache.write_song(cache, _code_row(ids[r.id]))
    checked = check_held_out(held, shards=clean, caches=(cache,))
    assert checked == {"shards/songs": 2, "shards/segments": 2, f"cache/{cache.name}": 2}
    with pytest.raises(HeldOutLeak, match=r"shards/songs: r1"):
        check_held_out(held, shards=leaky)
    # a pitch-shifted copy of a held-out recording is that recording
    code_cache.write_song(cache, _code_row(code_cache.variant_key(ids["r0"], 2.0)))
    with pytest.raises(HeldOutLeak, match=r"cache/.*: r0"):
        check_held_out(held, shards=clean, caches=(cache,))
