"""Anchoring repeated lyrics where the music repeats: the blocks, the repeats, the anchored path."""

import numpy as np
import pytest
from speech_songs import speech_song

from pipeline.align import AlignInput
from pipeline.align._dtw_kernel import align_path
from pipeline.align.dtw import TTSDTWAligner, TTSDTWOptions
from pipeline.align.repeats import CHROMA_RATE, chroma, repeat_groups, repeated_blocks
from pipeline.separate import build_separator
from pipeline.separate.activity import detect_vocal_activity

LYRICS = ["soy un fantasma que", "se asusta de si mismo",
          "la tristeza es muy extraña", "se alimenta de la belleza",  # chorus
          "ooh ooh ooh ooh",
          "un beso que no deja huella",
          "la tristeza es muy extrana", "se alimenta de la belleza",  # chorus, a letter off
          "ooh ooh ooh ooh",
          "la tristeza es muy extraña", "se alimenta de la belleza"]


def test_repeated_blocks_are_the_chorus_not_the_vocables():
    assert repeated_blocks(LYRICS) == [(2, [2, 6, 9])]
    # the longest block wins its lines; a shorter repeat inside it is not counted twice
    lines = ["one two three four", "five six seven eight", "nine ten eleven", "one two three four",
             "five six seven eight", "nine ten eleven", "five six seven eight"]
    assert repeated_blocks(lines) == [(3, [0, 3])]
    assert repeated_blocks(["la la la", "oh yeah", "la la la", "oh yeah"]) == []  # too few distinct words
    assert repeated_blocks(["one two three", "one two three"], min_words=6) == []


def _chroma_with_repeats(frames: int, places: list[int], length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.random((12, frames)).astype(np.float32)
    motif = rng.random((12, length)).astype(np.float32)
    for p in places:
        c[:, p:p + length] = motif + 0.05 * rng.random((12, length))
    return c / np.linalg.norm(c, axis=0, keepdims=True)


def test_repeat_groups_find_where_the_chorus_is_when_the_first_path_misplaced_a_copy():
    length, truth = 80, [300, 700, 1300]  # 8-s chorus at 30, 70 and 130 s
    chroma = _chroma_with_repeats(1600, truth, length)
    # the first path put the middle copy 35 s late; the other two are right
    starts = np.array([5.0, 12.0, 30.0, 34.0, 40.0, 60.0, 105.0, 109.0, 115.0, 130.0, 134.0])

    def block_end(a, b):
        return starts[b] + 4.0

    vocal = np.ones(160 * 50)
    groups, left = repeat_groups(LYRICS, starts, block_end, chroma, vocal, 50.0)
    assert left == [] and len(groups) == 1
    g = groups[0]
    assert g.copies == [2, 6, 9] and g.lines == 2
    np.testing.assert_allclose(g.positions, [t / CHROMA_RATE for t in truth], atol=0.11)
    assert g.shifts[0] == 0.0 and g.info["trusted"] in (2, 9)
    windows = g.windows(0.0, 1.0)
    assert set(windows) == {2, 3, 6, 7, 9, 10}
    assert any(lo <= 70.0 <= hi for lo, hi in windows[6]) and any(lo <= 74.0 <= hi for lo, hi in windows[7])


def test_repeat_groups_leave_a_block_alone_when_the_music_does_not_repeat_or_a_repeat_is_not_sung():
    starts = np.array([5.0, 12.0, 30.0, 34.0, 40.0, 60.0, 70.0, 74.0, 115.0, 130.0, 134.0])

    def block_end(a, b):
        return starts[b] + 4.0

    noise = _chroma_with_repeats(1600, [], 80)
    groups, left = repeat_groups(LYRICS, starts, block_end, noise, np.ones(8000), 50.0)
    assert groups == [] and "not clear" in left[0]["why"]
    chroma = _chroma_with_repeats(1600, [300, 700, 1300], 80)
    silent = np.ones(8000)
    silent[70 * 50:78 * 50] = 0.0  # the middle "chorus" is the band alone
    groups, left = repeat_groups(LYRICS, starts, block_end, chroma, silent, 50.0)
    assert groups == [] and left[0]["why"] == "fewer sung repeats than copies"


def test_an_anchored_line_enters_inside_its_window():
    # two lines of speech, a (3 frames) and b (3 frames); the song has a's sound twice, then b's
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    speech = np.stack([a, a, a, b, b, b], axis=1)
    song = np.tile(np.array([[0.7], [0.7]]), (1, 60))
    song[:, 10:13] = a[:, None]
    song[:, 30:33] = a[:, None]
    song[:, 50:53] = b[:, None]
    v = np.zeros(60)
    v[[*range(10, 13), *range(30, 33), *range(50, 53)]] = 1.0
    line_start, line_end = np.array([0, 3]), np.array([2, 5])
    args = (song, speech, v, line_start, line_end, 0.5, 0.15, 0.6, 0.05)
    free, _ = align_path(*args, np.zeros(2, np.bool_), np.ones((2, 1), np.bool_), 100.0)
    assert np.flatnonzero(free == 0)[0] in (10, 30)
    ok = np.zeros((2, 60), np.bool_)
    ok[0, 29:32] = True  # line a may start only at the second copy of its sound
    anchored, _ = align_path(*args, np.array([True, False]), ok, 100.0)
    assert np.flatnonzero(anchored == 0)[0] in (29, 30, 31) and np.flatnonzero(anchored == 3)[0] >= 33
    ok[0] = False
    ok[0, 10:12] = True
    anchored, _ = align_path(*args, np.array([True, False]), ok, 100.0)
    assert np.flatnonzero(anchored == 0)[0] in (10, 11)


@pytest.fixture(scope="module")
def chorus_song():
    lines = ["the sun goes down over the river", "hold my hand until the morning light",
             "and we sing a song of home", "the night is long and the road is cold",
             "hold my hand until the morning light", "and we sing a song of home"]
    return speech_song("en", lines=lines, seed=3)


def test_the_aligner_anchors_a_repeated_chorus_and_says_so(chorus_song):
    stems = build_separator("dsp").separate(chorus_song.mix, 44100)
    item = AlignInput(chorus_song.lyrics, chorus_song.duration_s, 44100, "en", chorus_song.mix, stems.vocals,
                      detect_vocal_activity(stems.vocals, chorus_song.mix, 44100))
    aligner = TTSDTWAligner()
    al = aligner.align(item)
    err = np.abs(al.word_onsets - chorus_song.word_onsets)
    assert err.mean() < 1.0 and (err <= 0.3).mean() >= 0.6, (err.mean(), al.notes)
    assert "repeated blocks anchored where the music repeats: 1 of 1" in al.notes, al.notes
    assert aligner.repeat_report[0]["copies"] == [1, 4]
    plain = TTSDTWAligner(TTSDTWOptions(repeats=False)).align(item)
    assert plain.confidence == al.confidence and "repeated" not in plain.notes  # confidence: the first path's


def test_a_long_song_is_compared_on_pooled_frames():
    length, truth = 300, [3000, 7000, 13000]  # a 30-s chorus in a 25-minute song (15,000 frames: pooled 3 to 1)
    chroma = _chroma_with_repeats(15_000, truth, length, seed=1)
    starts = np.array([5.0, 12.0, 300.0, 334.0, 400.0, 600.0, 1050.0, 1084.0, 1150.0, 1300.0, 1334.0])

    def block_end(a, b):
        return starts[b] + 30.0

    groups, left = repeat_groups(LYRICS, starts, block_end, chroma, np.ones(1500 * 50), 50.0)
    assert left == [] and len(groups) == 1
    np.testing.assert_allclose(groups[0].positions, [t / CHROMA_RATE for t in truth], atol=0.31)


def test_chroma_never_runs_the_tuning_estimate(monkeypatch):
    """The tuning estimate runs librosa's cached numba gufuncs, which Ray workers of a new
    environment can corrupt by compiling them at once (then every call is a SIGSEGV)."""
    import librosa.feature.spectral

    def refuse(*args, **kwargs):
        raise AssertionError("chroma estimated the tuning")

    monkeypatch.setattr(librosa.feature.spectral, "estimate_tuning", refuse)
    t = np.arange(44100 * 2) / 44100
    c = chroma(np.sin(2 * np.pi * 440.0 * t).astype(np.float32), 44100)  # A4
    assert c.shape == (12, 2 * CHROMA_RATE + 1) and np.argmax(c[:, CHROMA_RATE]) == 9
