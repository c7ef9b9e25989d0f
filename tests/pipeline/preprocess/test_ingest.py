import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError
from pipeline.preprocess.ingest import content_hash, genre_words, ingest_row, list_inputs, normalise_lyrics


def test_manifest_formats_agree(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF....")
    (tmp_path / "a.txt").write_text("la la\r\nla\n\n\n\nend  ", encoding="utf-8")
    row = {"path": "a.wav", "artist": " Ünïcode  Artist ", "genre": "Pop; Rock/indie", "lyrics": "a.txt", "title": "T",
           "language": "de", "id": "x1"}
    (tmp_path / "m.csv").write_text("path,artist,genre,lyrics,title,language,id\n" + ",".join(row.values()) + "\n", encoding="utf-8")
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "m.parquet")
    recs = [list_inputs(tmp_path / f"m.{ext}")[0] for ext in ("csv", "jsonl", "parquet")]
    assert recs[0] == recs[1] == recs[2]
    r = recs[0]
    assert r["source"] == str(tmp_path / "a.wav") and r["artist"] == "Ünïcode Artist"
    assert json.loads(r["genres_json"]) == ["pop", "rock", "indie"]
    assert r["lyrics_ref"] == str(tmp_path / "a.txt") and r["input_id"] == "x1"


def test_inline_lyrics_and_list_genres(tmp_path):
    row = {"uri": "file:///x/y.flac", "genre": ["Hip-Hop", "Jazz Funk"], "lyrics": "one line\nsecond line"}
    (tmp_path / "m.jsonl").write_text(json.dumps(row))
    r = list_inputs(tmp_path / "m.jsonl")[0]
    assert r["source"] == "/x/y.flac" and json.loads(r["genres_json"]) == ["hip-hop", "jazz", "funk"]
    assert r["lyrics_ref"] == "one line\nsecond line"


def test_folder_walk_with_sidecars(tmp_path):
    (tmp_path / "album").mkdir()
    (tmp_path / "album" / "s1.flac").write_bytes(b"fLaC")
    (tmp_path / "album" / "s1.json").write_text(json.dumps({"artist": "A", "genre": "folk", "title": "One"}))
    (tmp_path / "album" / "s1.txt").write_text("words")
    (tmp_path / "album" / "s2.mid").write_bytes(b"MThd")
    (tmp_path / ".hidden.wav").write_bytes(b"RIFF")
    recs = list_inputs(tmp_path)
    assert [r["source"].rsplit("/", 1)[-1] for r in recs] == ["s1.flac", "s2.mid"]  # sidecars and hidden files are not inputs
    assert recs[0]["artist"] == "A" and recs[0]["title"] == "One" and recs[0]["lyrics_ref"].endswith("s1.txt")


def test_rows_without_path_are_quarantined_and_bad_manifests_refused(tmp_path):
    (tmp_path / "m.csv").write_text("path,artist\n,someone\n")
    r = list_inputs(tmp_path / "m.csv")[0]
    assert r["status"] == "quarantined" and r["stage"] == "ingest" and "no audio path" in r["error"]
    (tmp_path / "n.csv").write_text("song,artist\nx.wav,someone\n")
    with pytest.raises(ConfigError, match="no audio column"):
        list_inputs(tmp_path / "n.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        list_inputs(tmp_path / "nope.csv")


def test_same_bytes_same_song_id(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF" + bytes(5000))
    (tmp_path / "b.wav").write_bytes(b"RIFF" + bytes(5000))
    (tmp_path / "c.wav").write_bytes(b"RIFF" + bytes(4999) + b"\x01")
    ids = [content_hash(str(tmp_path / f"{n}.wav"), 1024) for n in "abc"]
    assert ids[0] == ids[1] != ids[2] and len(ids[0]) == 32


def test_ingest_row_flags_missing_lyrics_file(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF" + bytes(100))
    row = list_inputs_row(tmp_path, "missing.txt")
    with pytest.raises(FileNotFoundError, match="lyrics file not found"):
        ingest_row(row, 1024)
    assert row["file_size"] == 104  # the fingerprint is kept for the quarantine record


def list_inputs_row(tmp_path, lyrics):
    (tmp_path / "m.csv").write_text(f"path,lyrics\na.wav,{lyrics}\n")
    return list_inputs(tmp_path / "m.csv")[0]


def test_lyrics_and_genre_normalisation():
    assert normalise_lyrics("  Hello\tworld \r\n\r\n\r\n\r\nEnd ") == "Hello world\n\nEnd"
    assert normalise_lyrics("e\u0301") == "é"  # NFC
    assert genre_words("Rock, rock; POP / indie rock alt country", 5) == ["rock", "pop", "indie", "alt", "country"]
    assert genre_words(None, 5) == []


# --- hostile manifests (issue 13): one bad row is a quarantined row, an unreadable file a clear error

def _quarantined(records):
    return {r["source"].rsplit("#", 1)[-1].rsplit("/", 1)[-1]: r["error"] for r in records if r["status"] == "quarantined"}


def test_a_non_utf8_csv_row_is_quarantined_alone(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"path,artist\na.wav,Good\nb.wav,Caf\xe9 Latin1\nc.wav,Fine\n")
    records = list_inputs(tmp_path / "m.csv")
    assert [r["status"] for r in records] == ["ok", "quarantined", "ok"]
    assert records[1]["source"].endswith("b.wav") and "not valid UTF-8 (column 'artist')" in records[1]["error"]


def test_jsonl_lines_that_are_not_objects_or_hold_lone_surrogates(tmp_path):
    lines = ['{"path": "a.wav"}', "[1, 2]", '"just a string"', '{"path": "b.wav", "artist": "\\ud800"}', "",
             '{"path": "c.wav"', '{"path": "d.wav", "lyrics": "' + "la " * 50_000 + '"}', '{"path": "e.wav"}']
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    records = list_inputs(tmp_path / "m.jsonl")
    q = _quarantined(records)
    assert q["row=2"] == "manifest line 2 is not a JSON object (got list)" and "got str" in q["row=3"]
    assert "not valid UTF-8 (column 'artist')" in q["b.wav"] and "is not JSON" in q["row=6"]
    assert "lyrics cell is over 128 KB" in q["d.wav"]
    assert [r["source"].rsplit("/", 1)[-1] for r in records if r["status"] == "ok"] == ["a.wav", "e.wav"]


def test_a_huge_csv_cell_is_a_quarantined_row(tmp_path):
    (tmp_path / "m.csv").write_text("path,lyrics\na.wav," + "x" * 300_000 + "\nb.wav,short\n")
    records = list_inputs(tmp_path / "m.csv")
    assert "over 128 KB" in records[0]["error"] and records[1]["status"] == "ok"


def test_unreadable_manifests_are_refused_before_work(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"PAR1" + b"\x00" * 100)
    with pytest.raises(ConfigError, match="not a readable Parquet manifest"):
        list_inputs(tmp_path / "m.parquet")


def test_a_bad_sidecar_quarantines_its_song_only(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.wav").write_bytes(b"RIFF")
    (tmp_path / "a.json").write_text('{"artist": "ok"}')
    (tmp_path / "b.json").write_text('{"artist": ')
    (tmp_path / "c.json").write_text('["not", "an", "object"]')
    records = {r["source"].rsplit("/", 1)[-1]: r for r in list_inputs(tmp_path)}
    assert records["a.wav"]["status"] == "ok" and records["a.wav"]["artist"] == "ok"
    assert "sidecar b.json is not JSON" in records["b.wav"]["error"]
    assert "sidecar c.json is not a JSON object" in records["c.wav"]["error"]


def test_lyrics_files_must_be_regular_and_small(tmp_path):
    import os

    from pipeline.data.lyrics import LyricsError, read_lyrics

    os.mkfifo(tmp_path / "fifo.txt")  # reading it would block forever
    with pytest.raises(LyricsError, match="not a regular file"):
        read_lyrics(str(tmp_path / "fifo.txt"))
    (tmp_path / "big.txt").write_text("la " * 60_000)
    with pytest.raises(LyricsError, match="over 128 KB"):
        read_lyrics(str(tmp_path / "big.txt"))


def test_a_corpus_root_confines_manifest_paths(tmp_path, monkeypatch):
    from pipeline.preprocess.config import IngestConfig

    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    (tmp_path / "secret.txt").write_text("not yours")
    (corpus / "audio" / "link.wav").symlink_to(tmp_path / "secret.wav")
    (corpus / "audio" / "ok.wav").write_bytes(b"RIFF")
    (corpus / "m.csv").write_text(f"path,lyrics\naudio/ok.wav,\n../secret.wav,\n{tmp_path / 'secret.wav'},\naudio/link.wav,\n"
                                  "audio/ok.wav,../secret.txt\n")
    manifest = str(corpus / "m.csv")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert IngestConfig().confine_to(manifest) is None  # a local run reads what its manifest names
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # under ray job submit: the manifest's folder
    root = IngestConfig().confine_to(manifest)
    assert root == corpus and IngestConfig(corpus_root="off").confine_to(manifest) is None
    records = list_inputs(manifest, root=root)
    assert [r["status"] for r in records] == ["ok", "quarantined", "quarantined", "quarantined", "quarantined"]
    assert "audio path is outside the corpus root" in records[3]["error"] and "lyrics path" in records[4]["error"]


def test_a_sidecar_must_be_a_small_regular_file_inside_the_corpus_root(tmp_path):
    import os

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("fifo", "zero", "outside", "big", "fine", "pipe"):
        (corpus / f"{name}.wav").write_bytes(b"RIFF")
    os.mkfifo(corpus / "fifo.json")  # reading it would hang the driver before Ray starts
    (corpus / "zero.json").symlink_to("/dev/zero")  # would fill the driver's memory
    (tmp_path / "elsewhere.json").write_text('{"artist": "not yours"}')
    (corpus / "outside.json").symlink_to(tmp_path / "elsewhere.json")
    (corpus / "big.json").write_text('{"lyrics": "' + "la " * 70_000 + '"}')
    (corpus / "fine.json").write_text('{"artist": "Fine"}')
    os.mkfifo(corpus / "pipe.mp3")  # an audio name on a FIFO: listed, and refused by ingest, not silently left out
    records = {r["source"].rsplit("/", 1)[-1]: r for r in list_inputs(corpus, root=corpus)}
    assert "sidecar fifo.json is not a regular file" in records["fifo.wav"]["error"]
    assert "sidecar zero.json is outside the corpus root" in records["zero.wav"]["error"]
    assert "sidecar outside.json is outside the corpus root" in records["outside.wav"]["error"]
    assert "sidecar big.json is over" in records["big.wav"]["error"]
    assert records["fine.wav"]["artist"] == "Fine" and records["pipe.mp3"]["status"] == "ok"
    with pytest.raises(ValueError, match="not a regular file"):
        ingest_row(records["pipe.mp3"], 1024)
    no_root = {r["source"].rsplit("/", 1)[-1]: r for r in list_inputs(corpus)}
    assert "is not a regular file" in no_root["zero.wav"]["error"]  # /dev/zero is refused without a root too


def test_a_dictionary_encoded_parquet_bomb_is_refused_row_by_row(tmp_path):
    """~1 MB on disk, ~1 GB of text once decoded: sized from the dictionary, never expanded whole."""
    import os
    import resource

    big = "la " * 100_000  # 300 KB, stored once in the dictionary
    rows = 3_000
    table = pa.table({"path": pa.array([f"a{i}.wav" for i in range(rows)]),
                      "lyrics": pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([big]))})
    pq.write_table(table, tmp_path / "bomb.parquet", use_dictionary=True, compression="zstd")
    assert os.path.getsize(tmp_path / "bomb.parquet") < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    records = list_inputs(tmp_path / "bomb.parquet")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(records) == rows and all("bytes of text" in r["error"] for r in records)
    assert grown_mb < 300, grown_mb  # the decoded text is 900 MB


def test_manifest_limits_refuse_too_many_rows_or_too_much_text(tmp_path):
    from pipeline.preprocess.manifest import ManifestLimits

    (tmp_path / "m.csv").write_text("path\n" + "".join(f"a{i}.wav\n" for i in range(50)))
    with pytest.raises(ConfigError, match="more than 10 rows"):
        list_inputs(tmp_path / "m.csv", limits=ManifestLimits(max_rows=10))
    with pytest.raises(ConfigError, match="bytes of text"):
        list_inputs(tmp_path / "m.csv", limits=ManifestLimits(max_bytes=100))
    pq.write_table(pa.table({"path": [f"a{i}.wav" for i in range(50)]}), tmp_path / "m.parquet")
    with pytest.raises(ConfigError, match="more than 10 rows"):
        list_inputs(tmp_path / "m.parquet", limits=ManifestLimits(max_rows=10))
    assert len(list_inputs(tmp_path / "m.parquet")) == 50


def test_a_sparse_terabyte_file_is_refused_from_its_size_before_it_is_hashed(tmp_path, monkeypatch):
    import os

    from pipeline.preprocess import ingest

    (tmp_path / "sparse.wav").write_bytes(b"RIFF")
    os.truncate(tmp_path / "sparse.wav", 1 << 40)
    monkeypatch.setattr(ingest, "content_hash", lambda *a: pytest.fail("hashed a file it should have refused"))
    row = list_inputs_row(tmp_path, "")
    row["source"] = str(tmp_path / "sparse.wav")
    with pytest.raises(ValueError, match="over the 32 GiB limit"):
        ingest_row(row, 1 << 20)


def test_a_header_that_declares_too_much_is_refused_before_hashing(tmp_path, monkeypatch):
    import functools

    import numpy as np
    import soundfile as sf

    from pipeline import audio
    from pipeline.preprocess import ingest

    sf.write(tmp_path / "long.wav", np.zeros(8000 * 10, np.float32), 8000)
    monkeypatch.setattr(ingest, "content_hash", lambda *a: pytest.fail("hashed a file it should have refused"))
    row = list_inputs_row(tmp_path, "")
    row["source"] = str(tmp_path / "long.wav")
    with pytest.raises(audio.AudioError, match="too long"):
        ingest_row(row, 1 << 20, check_header=functools.partial(audio.check_header, max_seconds=5.0))
