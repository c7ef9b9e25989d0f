"""A sampling request is costed before the first token: an absurd duration is refused in milliseconds."""

from __future__ import annotations

import time

import pytest

from models.sampling import window_starts
from pipeline.config import ConfigError
from pipeline.sample import budget

CARDS = [{"config": {"max_duration_s": 600.0}}]


def _tokens(seconds: float) -> dict[str, int]:
    samples = int(seconds * 44100)
    return {"top": samples // 128, "middle": samples // 32, "bottom": samples // 8}


def test_a_duration_past_what_the_priors_were_trained_for_is_refused(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="longer than 600 s"):
        budget.check(1e9, 0.0, CARDS, 1, _tokens(1e9), ["bottom"], int(1e9 * 44100), tmp_path)
    assert time.perf_counter() - t0 < 1.0
    budget.check(20.0, 0.0, CARDS, 2, _tokens(20.0), ["bottom"], 20 * 44100, tmp_path)  # an ordinary request passes


def test_a_raised_cap_still_meets_the_memory_and_disk_estimates(tmp_path):
    seconds = 1e7  # allowed by --max_duration, but ~3.5 TB of WAV and ~5 TB of decoder memory
    with pytest.raises(ConfigError, match="GiB of memory"):
        budget.check(seconds, 1e12, CARDS, 4, _tokens(seconds), ["bottom"], int(seconds * 44100), tmp_path / "new" / "out")
    need = budget.estimate(1, _tokens(60.0), ["bottom"], 60 * 44100)
    assert 60 * 44100 * 4 < need.disk_bytes < 60 * 44100 * 4 * 3  # a minute of 16-bit stereo, codes and pictures


def test_the_windows_of_a_level_are_produced_one_at_a_time():
    t0 = time.perf_counter()
    windows = window_starts(300_000_000_000, 2048, 1024, 0)  # a list of these would not fit in memory
    assert next(windows) == (0, 2048) and next(windows) == (1024, 3072)
    assert time.perf_counter() - t0 < 0.1
