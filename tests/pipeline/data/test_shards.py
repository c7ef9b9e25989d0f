import numpy as np
import pytest

from pipeline import audio as audio_io
from pipeline.data import shards


def _row(song_id, samples, status="ok"):
    return {"status": status, "stage": "" if status == "ok" else "decode", "error": "" if status == "ok" else "bad",
            "song_id": song_id, "source": f"/x/{song_id}.wav", "input_id": song_id, "title": song_id, "artist": "A",
            "genres_json": '["pop"]', "language": "", "lyrics": "la la", "lyrics_missing": False, "num_samples": len(samples),
            "source_channels": 2, "source_sample_rate": 44100, "source_format": "WAV", "file_size": 10, "file_mtime_ns": 1,
            "peak": 0.5, "separator": "dsp", "separator_version": "1", "vocal_activity": bytes([0, 1, 1]),
            "vocal_activity_hop_s": 0.05, "vocal_activity_ratio": 0.66, "alignment_method": "linear",
            "alignment_confidence": 0.0, "alignment_coverage": 0.5, "alignment_language": "", "alignment_notes": "",
            "char_onsets": np.arange(5, dtype="<f4").tobytes(),
            "word_char_starts": np.array([0, 3], "<i4").tobytes(), "word_onsets": np.array([0, 3], "<f4").tobytes(),
            "audio": audio_io.to_bytes(samples) if status == "ok" else b""}


@pytest.mark.parametrize("encoding", ["pcm16", "flac"])
def test_random_windows_read_back_what_was_written(tmp_path, encoding):
    rng = np.random.default_rng(0)
    songs = {f"s{i}": rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32) for i, n in enumerate([5000, 12_345, 3 * 1024])}
    layout = shards.ShardLayout(encoding, segment_samples=1024, segments_per_row_group=3)
    shards.write_shard([_row(k, v) for k, v in songs.items()] + [_row("bad", np.zeros((0, 2)), "quarantined")], tmp_path, "r1", layout)
    reader = shards.ShardReader(tmp_path)
    for song_id, x in songs.items():
        q = np.round(x * 32767) / 32767
        for offset, length in [(0, 1024), (1000, 2100), (len(x) - 10, 500), (len(x) + 5, 10), (0, len(x))]:
            w = reader.read_window(song_id, offset, length)
            assert w.shape == (length, 2)
            valid = max(0, min(length, len(x) - offset))
            assert np.allclose(w[:valid], q[offset:offset + valid], atol=1e-6)
            assert not w[valid:].any()  # zero padding past the end
    songs_t = shards.read_table(tmp_path, shards.SONGS)
    assert songs_t.num_rows == 3 and songs_t.schema == shards.SONGS_SCHEMA
    assert songs_t["char_onsets"].to_pylist()[0] == [0, 1, 2, 3, 4]
    q = shards.read_table(tmp_path, shards.QUARANTINE).to_pylist()
    assert [(r["source"], r["stage"], r["error"]) for r in q] == [("/x/bad.wav", "decode", "bad")]
    assert not [p for p in (tmp_path / shards.STAGING).rglob("*") if p.is_file()]  # everything staged was committed


def test_recover_removes_half_written_shards(tmp_path):
    layout = shards.ShardLayout("pcm16", 1024, 2)
    shards.write_shard([_row("s0", np.zeros((3000, 2), np.float32))], tmp_path, "r1", layout)
    # a killed run: a staged file and a segments file whose songs file never landed
    (tmp_path / shards.STAGING / "r2" / "songs").mkdir(parents=True)
    (tmp_path / shards.STAGING / "r2" / "songs" / "part-r2-x.parquet").write_bytes(b"half")
    (tmp_path / shards.SEGMENTS / "part-r2-y.parquet").write_bytes(b"orphan")
    assert shards.recover(tmp_path) == {"staging_files": 1, "orphan_segments": 1}
    assert len(list((tmp_path / shards.SEGMENTS).glob("*.parquet"))) == 1
    assert shards.ShardReader(tmp_path).read_window("s0", 0, 10).shape == (10, 2)
    parts = shards.committed_parts(tmp_path)
    assert {p["path"].split("/")[0] for p in parts} == {"songs", "segments"} and all(p["rows"] > 0 for p in parts)


def test_a_superseded_run_commits_nothing(tmp_path):
    """A killed run's straggling worker must not add a shard once a rerun has claimed the output."""
    layout = shards.ShardLayout("pcm16", 1024, 4)
    shards.claim_output(tmp_path, "old")
    shards.write_shard([_row("s0", np.zeros((3000, 2), np.float32))], tmp_path, "old", layout)
    shards.claim_output(tmp_path, "new")
    with pytest.raises(shards.SupersededRun, match="superseded by run new"):
        shards.write_shard([_row("s1", np.zeros((3000, 2), np.float32))], tmp_path, "old", layout)
    assert len(list((tmp_path / shards.SONGS).glob("*.parquet"))) == 1
    shards.write_shard([_row("s1", np.zeros((3000, 2), np.float32))], tmp_path, "new", layout)
    assert len(list((tmp_path / shards.SONGS).glob("*.parquet"))) == 2
