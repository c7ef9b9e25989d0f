"""The run folder of a sampling job on a shared host: claimed for one request, written without following links,
uploaded by the list of what the run wrote."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.sample.output import SampleOutput

REQUEST = {"duration": 4.0, "seed": 0}


def test_a_new_folder_is_made_owner_only_and_holds_the_request(tmp_path):
    out = SampleOutput(tmp_path / "new" / "run")
    out.claim(REQUEST)
    assert stat.S_IMODE(os.stat(out.root).st_mode) == 0o700
    assert [p for p, _ in out.uploads()] == [out.root / "request.json"]


def test_a_folder_holding_anything_else_is_refused(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    with pytest.raises(ConfigError, match="not empty"):
        SampleOutput(home).claim(REQUEST)  # --out ~ would have uploaded ~/.ssh
    assert not (home / "request.json").exists()


def test_the_same_request_resumes_and_another_is_refused(tmp_path):
    SampleOutput(tmp_path / "run").claim(REQUEST)
    SampleOutput(tmp_path / "run").claim(REQUEST)
    with pytest.raises(ConfigError, match="differs in seed"):
        SampleOutput(tmp_path / "run").claim({**REQUEST, "seed": 1})


def test_a_symlink_or_a_folder_of_another_user_is_refused(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(ConfigError, match="not a folder"):
        SampleOutput(tmp_path / "link").claim(REQUEST)
    if os.geteuid() != 0:
        pytest.skip("making a folder of another user needs root")
    (tmp_path / "theirs").mkdir()
    os.chown(tmp_path / "theirs", 12345, 12345)
    with pytest.raises(ConfigError, match="another user"):
        SampleOutput(tmp_path / "theirs").claim(REQUEST)


def test_planted_links_redirect_no_write_and_only_written_files_are_uploaded(tmp_path):
    out = SampleOutput(tmp_path / "run")
    out.claim(REQUEST)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out.root / "sample-0.wav").symlink_to(victim)  # planted where the run will write
    (out.root / "codes").symlink_to(tmp_path)  # a folder link: writes must not go through it
    (out.root / "notes.txt").write_text("someone else's file")
    out.write_wav("sample-0.wav", np.zeros((4410, 2), np.float32), 44100)
    assert victim.read_text() == "keep me" and not (out.root / "sample-0.wav").is_symlink()
    with pytest.raises(ConfigError, match="not a folder"):
        out.save_npy("codes/top.npy", np.zeros((1, 4), np.int16))
    assert not (tmp_path / "top.npy").exists()
    out.save_npy("middle/codes.npy", np.zeros((1, 4), np.int16))
    uploaded = {p.relative_to(out.root).as_posix(): folder for p, folder in out.uploads()}
    assert uploaded == {"request.json": None, "sample-0.wav": None, "middle/codes.npy": "middle"}


def test_partial_windows_are_appended_and_resumed_in_order(tmp_path):
    from pipeline.sample.level import Segment
    from pipeline.sample.run import resume_partial

    out = SampleOutput(tmp_path / "run")
    out.claim(REQUEST)
    segment = Segment("middle", 0, 0, 100, np.zeros((2, 3), np.int64))  # 3 tokens of a prompt
    out.save_npy("codes/partial/middle-0000/0000000003.npy", np.ones((2, 4), np.int16))
    out.save_npy("codes/partial/middle-0000/0000000007.npy", np.full((2, 2), 2, np.int16))
    out.save_npy("codes/partial/middle-0000/0000000020.npy", np.full((2, 2), 9, np.int16))  # after a gap: not used
    known = resume_partial(out, "middle", segment)
    assert known.tolist() == [[0, 0, 0, 1, 1, 1, 1, 2, 2]] * 2
    assert not any(rel.startswith("codes/partial") for rel in (p.relative_to(out.root).as_posix() for p, _ in out.uploads()))
