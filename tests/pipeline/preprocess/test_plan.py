"""The driver's decisions, made a batch at a time: what a rerun skips, duplicates, every input counted once."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data import shards
from pipeline.preprocess.plan import INGESTED_SCHEMA, PLAN_SCHEMA, ExistingOutput, Outcomes, Spool, plan, sort_out
from tests.pipeline.data.test_shards import _row


def test_a_rerun_skips_only_content_failures_under_the_same_config(tmp_path):
    layout = shards.ShardLayout("pcm16", segment_samples=1024, segments_per_row_group=3, config_key="k1")
    rows = []
    for name, kind in [("corrupt", "input"), ("unreadable", "transient"), ("bug", "internal")]:
        r = _row(name, np.zeros((0, 2)), "quarantined")
        r["error_kind"] = kind
        rows.append(r)
    shards.write_shard(rows, tmp_path, "r1", layout)
    same = ExistingOutput(tmp_path, "k1")
    assert [n for n in ("corrupt", "unreadable", "bug") if same.skip_reason((f"/x/{n}.wav", 10, 1))] == ["corrupt"]
    other = ExistingOutput(tmp_path, "k2")  # e.g. a longer --decode.max_seconds
    assert not any(other.skip_reason((f"/x/{n}.wav", 10, 1)) for n in ("corrupt", "unreadable", "bug"))
    assert same.skip_reason(("/x/corrupt.wav", 10, 2)) is None  # the file was replaced


def test_a_quarantine_written_before_the_kinds_is_retried(tmp_path):
    old = pa.schema([f for f in shards.QUARANTINE_SCHEMA if f.name not in ("error_kind", "config_key")])
    (tmp_path / shards.QUARANTINE).mkdir()
    pq.write_table(pa.Table.from_pylist([{"source": "/x/a.wav", "stage": "decode", "error": "bad", "song_id": "", "input_id": "a",
                                          "file_size": 10, "file_mtime_ns": 1, "run_id": "r0"}], schema=old),
                   tmp_path / shards.QUARANTINE / "part-r0-0.parquet")
    assert ExistingOutput(tmp_path, "k1").quarantined == set()
    layout = shards.ShardLayout("pcm16", segment_samples=1024, segments_per_row_group=3, config_key="k1")
    r = {**_row("b", np.zeros((0, 2)), "quarantined"), "error_kind": "input"}
    shards.write_shard([r], tmp_path, "r1", layout)  # old and new files side by side
    assert ExistingOutput(tmp_path, "k1").quarantined == {("/x/b.wav", 10, 1)}


def _record(source: str, status: str = "ok") -> dict:
    return {"source": source, "input_id": "", "title": "", "artist": "", "genres_json": "[]", "language": "", "lyrics_ref": "",
            "status": status, "stage": "" if status == "ok" else "ingest", "error": "" if status == "ok" else "bad",
            "error_kind": "" if status == "ok" else "input"}


def test_a_committed_file_is_skipped_from_its_stat_and_every_input_is_counted_once(tmp_path):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF....")
    st = os.stat(audio)
    layout = shards.ShardLayout("pcm16", segment_samples=1024, segments_per_row_group=3, config_key="k")
    song = {**_row("song-a", np.zeros((2000, 2), np.float32)), "source": str(audio), "file_size": st.st_size,
            "file_mtime_ns": st.st_mtime_ns}
    shards.write_shard([song], tmp_path / "out", "r1", layout)
    existing = ExistingOutput(tmp_path / "out", "k")
    outcomes = Outcomes(tmp_path / "inputs.parquet")
    spool = Spool(tmp_path / "plan.parquet", PLAN_SCHEMA)
    seen = plan([_record(str(audio)), _record(str(tmp_path / "new.wav")), _record("manifest#row=3", "quarantined")],
                existing, spool, outcomes)
    assert seen == 3 and spool.rows == 2 and outcomes.counts == {"skipped_existing": 1}
    assert [t["input_index"].to_pylist() for t in spool.batches()] == [[1, 2]]


def test_sort_out_keeps_the_first_copy_in_input_order_and_quarantines_the_rest(tmp_path):
    existing = ExistingOutput(tmp_path / "empty", "k")
    existing.song_ids = {"committed"}
    ingested = Spool(tmp_path / "ingested.parquet", INGESTED_SCHEMA)
    ids = {4: "x", 1: "x", 2: "committed", 3: "y", 0: ""}  # written out of order, as Ray returns them
    for i, sid in ids.items():
        ingested.add({**_record(f"/in/{i}.wav", "ok" if sid else "quarantined"), "input_index": i, "file_size": 1,
                      "file_mtime_ns": 1, "song_id": sid, "lyrics": "", "lyrics_missing": True})
    ingested.close()
    pending, held = Spool(tmp_path / "pending.parquet", INGESTED_SCHEMA), []
    outcomes = Outcomes(tmp_path / "inputs.parquet")
    sort_out(ingested, existing, pending, held.extend, outcomes)
    assert sorted(r for t in pending.batches() for r in t["input_index"].to_pylist()) == [1, 3]
    assert {r["source"]: r["stage"] for r in held} == {"/in/4.wav": "dedup", "/in/0.wav": "ingest"}
    assert "same audio as /in/1.wav" in next(r for r in held if r["stage"] == "dedup")["error"]
    assert outcomes.counts == {"skipped_existing": 1}
    outcomes.add(held)
    path = outcomes.close()
    assert pq.read_table(path).num_rows == 3 and not (tmp_path / ".inputs.parquet.tmp").exists()
