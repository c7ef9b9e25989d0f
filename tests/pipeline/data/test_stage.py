"""The batch stage's bookkeeping: a row that kills its worker process is quarantined, not retried for ever."""

import faulthandler
import multiprocessing
import os
import signal

import pyarrow as pa

from pipeline.data.stage import MAX_WORKER_DEATHS, RowStage


class Doubling(RowStage):
    name = "double"
    outputs = {"doubled": 0}

    def process_row(self, row):
        if row["value"] == 13:
            os.kill(os.getpid(), signal.SIGSEGV)  # what a crash in native code does to the worker
        if row["value"] < 0:
            raise ValueError("negative")
        return {"doubled": 2 * row["value"]}


def _batch(*values):
    return pa.Table.from_pylist([{"input_index": i, "value": v, "status": "ok", "stage": "", "error": "", "error_kind": ""}
                                 for i, v in enumerate(values)])


def _in_a_worker(crash_dir) -> int:
    """The stage over the batch in a process of its own, as a Ray worker runs it; its exit code."""
    def work():
        faulthandler.disable()  # pytest's, inherited by the fork: the crash is expected, its stack is noise
        Doubling(crash_dir)(_batch(1, 13, -1))

    worker = multiprocessing.get_context("fork").Process(target=work)
    worker.start()
    worker.join(60)
    return worker.exitcode


def test_a_row_that_kills_its_worker_is_quarantined_after_the_second_death(tmp_path):
    for _ in range(MAX_WORKER_DEATHS):  # Ray's retries: each try dies on the same row
        assert _in_a_worker(str(tmp_path)) == -signal.SIGSEGV
    assert sorted(p.name for p in tmp_path.iterdir()) == ["double-1"]  # the rows done before it left no mark
    rows = Doubling(str(tmp_path))(_batch(1, 13, -1)).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "quarantined", "quarantined"]
    assert rows[0]["doubled"] == 2 and rows[1]["doubled"] == 0
    assert rows[1]["stage"] == "double" and rows[1]["error_kind"] == "internal"
    assert f"died {MAX_WORKER_DEATHS} times" in rows[1]["error"] and rows[2]["error"] == "negative"
    assert [p.name for p in tmp_path.iterdir()] == ["double-1"]  # not processed again: the mark stays as it was


def test_one_death_is_forgiven(tmp_path):
    """The first death may be the node's: the row is processed again, and done."""
    (tmp_path / "double-0").write_text("1")
    rows = Doubling(str(tmp_path))(_batch(4)).to_pylist()
    assert rows[0]["status"] == "ok" and rows[0]["doubled"] == 8 and not list(tmp_path.iterdir())


def test_without_a_crash_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = Doubling()(_batch(2, -1)).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "quarantined"] and not list(tmp_path.iterdir())


def test_a_stage_names_its_marks_by_its_row_key(tmp_path):
    """The code cache's encoder names its rows by cache key: a pitch-shifted variant is a row of its own."""

    class ByKey(Doubling):
        row_key = "song_id"

    (tmp_path / "double-abc#pitch+2").write_text(str(MAX_WORKER_DEATHS))
    rows = ByKey(str(tmp_path))(pa.Table.from_pylist([
        {"song_id": k, "value": 1, "status": "ok", "stage": "", "error": "", "error_kind": ""} for k in ("abc", "abc#pitch+2")]))
    assert [r["status"] for r in rows.to_pylist()] == ["ok", "quarantined"]
