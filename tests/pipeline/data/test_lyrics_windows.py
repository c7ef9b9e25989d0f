import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.lyrics_windows import LyricsWindowConfig, LyricsWindows

SR = 44100


def _shards(tmp_path):
    (tmp_path / "songs").mkdir()
    lyrics = "".join(np.random.default_rng(0).choice(list("abcdefghijklmnopqrstuvwxyz "), 3000))
    # song "early": every character sung in the first 30 s of a 300 s song; "unsure": same, low confidence
    onsets = np.linspace(0, 30, len(lyrics), dtype=np.float32).tolist()
    rows = [{"song_id": sid, "lyrics": lyrics, "sample_rate": SR, "num_samples": 300 * SR, "duration_s": 300.0,
             "alignment_method": "tts_dtw", "alignment_confidence": conf, "char_onsets": onsets}
            for sid, conf in (("early", 0.6), ("unsure", 0.1))]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "songs" / "part-0.parquet")
    return tmp_path, lyrics


def test_windows_follow_the_alignment_and_distrust_low_confidence(tmp_path):
    out, lyrics = _shards(tmp_path)
    windows = LyricsWindows(out, LyricsWindowConfig(n_chars=512, min_confidence=0.3))
    assert windows.song_ids == ["early", "unsure"]
    assert windows.sources["early"] == "alignment: tts_dtw" and windows.sources["unsure"].startswith("linear")
    # 10 s into the song: the aligned song is at character ~1000; the linear fallback at ~100
    aligned = windows.window("early", 10 * SR, 2 * SR)
    linear = windows.window("unsure", 10 * SR, 2 * SR)
    assert len(aligned) == len(linear) == 512
    assert lyrics[1000:1100] in aligned and lyrics[:100] not in aligned
    assert lyrics[100:110] in linear and lyrics[1000:1100] not in linear
    # past the last sung character: the last 512 characters
    assert windows.window("early", 200 * SR, SR) == lyrics[-512:]


def test_low_confidence_songs_can_be_excluded(tmp_path):
    out, _ = _shards(tmp_path)
    windows = LyricsWindows(out, LyricsWindowConfig(min_confidence=0.3, low_confidence="exclude"))
    assert windows.song_ids == ["early"] and "0.10 < 0.3" in windows.excluded["unsure"]
    with pytest.raises(KeyError, match="excluded"):
        windows.window("unsure", 0, SR)
    assert LyricsWindows(tmp_path / "nowhere").song_ids == []
