import numpy as np
import pytest

from pipeline.align import AlignInput, LinearAligner, VocalActivityAligner, build_aligner, word_starts
from pipeline.data.lyrics_windows import lyrics_window
from pipeline.separate.activity import VocalActivity

LYRICS = "Ça va? Ñandú — «déjà vu»\n日本語の歌詞 ... !!!\n\nSchön, ĳ!"


def _check(al, lyrics, duration):
    assert al.char_onsets.shape == (len(lyrics),)
    assert np.all(np.diff(al.char_onsets) >= 0) and al.char_onsets.min() >= 0 and al.char_onsets.max() <= duration
    assert len(al.word_onsets) == len(lyrics.split()) and np.all(np.diff(al.word_onsets) >= 0)
    assert 0.0 <= al.confidence <= 1.0


@pytest.mark.parametrize("aligner", ["linear", "vocal_activity"])
def test_onsets_monotonic_in_range_unicode(aligner):
    active = np.zeros(1000, bool)
    active[200:400] = active[600:900] = True
    item = AlignInput(LYRICS, duration_s=1000 * 0.05, sample_rate=44100, vocal_activity=VocalActivity(active, 0.05))
    _check(build_aligner(aligner).align(item), LYRICS, 50.0)


def test_vocal_activity_places_words_on_sung_frames():
    active = np.zeros(1000, bool)
    active[200:400] = active[600:900] = True
    va = VocalActivity(active, 0.05)
    lyrics = " ".join(["word"] * 60)
    al = VocalActivityAligner().align(AlignInput(lyrics, 50.0, 44100, vocal_activity=va))
    frames = (al.word_onsets / 0.05).astype(int)
    assert active[frames].all() and al.method == "vocal_activity"
    assert al.word_onsets[0] == pytest.approx(10.0) and al.word_onsets[-1] < 45.0


def test_fallbacks_and_edge_cases():
    silent = VocalActivity(np.zeros(100, bool), 0.05)
    al = VocalActivityAligner().align(AlignInput("la la la", 5.0, 44100, vocal_activity=silent))
    assert al.method.startswith("linear (fallback") and al.confidence == 0.0
    empty = LinearAligner().align(AlignInput("", 5.0, 44100))
    assert empty.char_onsets.size == 0 and empty.word_onsets.size == 0
    long_lyrics = "x " * 50_000  # more characters than a 3 s song can hold: still monotonic, in range
    _check(LinearAligner().align(AlignInput(long_lyrics, 3.0, 44100)), long_lyrics, 3.0)
    with pytest.raises(ValueError, match="unknown aligner"):
        build_aligner("magic")


def test_lyrics_window_picks_the_sung_characters():
    lyrics = "".join(chr(ord("a") + i % 26) for i in range(2000))
    onsets = np.linspace(0, 200, len(lyrics), dtype=np.float32)  # 10 characters per second
    w = lyrics_window(lyrics, onsets, 100.0, 110.0, n_chars=512)
    first = int(np.searchsorted(onsets, 100.0))
    assert len(w) == 512 and lyrics[first:first + 100] in w  # the window's own characters are inside
    assert lyrics_window(lyrics, onsets, 0.0, 5.0, 512) == lyrics[:512]
    assert lyrics_window(lyrics, onsets, 195.0, 200.0, 512) == lyrics[-512:]
    assert lyrics_window("", np.zeros(0), 0, 1) == ""
    assert list(word_starts("  two words")) == [2, 6]


def test_evaluate_on_synthetic_songs_with_known_timings(tmp_path):
    from pipeline.align.evaluate import evaluate
    from pipeline.demo_corpus import make_demo_corpus

    make_demo_corpus(tmp_path, songs=2, seconds=15.0, seed=21)
    results = evaluate(tmp_path, ["linear", "vocal_activity"])
    assert len(results) == 4 and all(0 <= r["within_0.3s"] <= r["within_1s"] <= 1 for r in results)
    mean = {name: np.mean([r["aae_s"] for r in results if r["aligner"] == name]) for name in ("linear", "vocal_activity")}
    assert mean["vocal_activity"] < mean["linear"], mean
