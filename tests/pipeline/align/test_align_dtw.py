"""The TTS+DTW aligner and the fallback chain, on synthetic songs with known word timings."""

import numpy as np
import pytest
from speech_songs import speech_song

from pipeline.align import AlignerUnavailable, AlignInput, build_aligner, low_confidence_fallback
from pipeline.align.base import char_onsets_from_words
from pipeline.align.dtw import TTSDTWAligner, shuffled_words
from pipeline.separate import build_separator
from pipeline.separate.activity import detect_vocal_activity

UNICODE_LYRICS = "Ça va? Ñandú — «déjà vu»\nl'été, c'est « fou » !!!\n\nSchön, ĳ! 12 000 €"


def _item(song, lyrics=None, language="__song__", vocals="dsp"):
    stems = build_separator("dsp").separate(song.mix, 44100)
    va = detect_vocal_activity(stems.vocals, song.mix, 44100)
    return AlignInput(song.lyrics if lyrics is None else lyrics, song.duration_s, 44100,
                      song.language if language == "__song__" else language, song.mix,
                      song.vocals if vocals == "true" else stems.vocals, va)


@pytest.fixture(scope="module")
def english():
    return speech_song("en", seed=1)


def _check(al, lyrics, duration):
    assert al.char_onsets.shape == (len(lyrics),) and al.word_onsets.shape == (len(lyrics.split()),)
    assert np.all(np.diff(al.char_onsets) >= 0) and np.all(np.diff(al.word_onsets) >= 0)
    assert al.char_onsets.min() >= 0 and al.char_onsets.max() <= duration and 0.0 <= al.confidence <= 1.0


@pytest.mark.parametrize("language", ["en", "es"])
def test_tts_dtw_finds_the_words_of_a_speech_song(language):
    song = speech_song(language, seed=2)
    linear = build_aligner("linear").align(_item(song)).word_onsets
    for stem, max_aae, min_within in (("true", 0.15, 0.9), ("dsp", 1.0, 0.6)):
        al = TTSDTWAligner().align(_item(song, vocals=stem))
        err = np.abs(al.word_onsets - song.word_onsets)
        assert err.mean() < max_aae and (err <= 0.3).mean() >= min_within, (stem, err.mean(), (err <= 0.3).mean())
        assert err.mean() < np.abs(linear - song.word_onsets).mean() / 2
        assert al.method == "tts_dtw" and al.confidence > 0.3


@pytest.mark.parametrize("aligner", ["linear", "vocal_activity", "tts_dtw", "auto"])
def test_onsets_monotonic_in_range_with_unicode_and_punctuation(english, aligner):
    item = _item(english, lyrics=UNICODE_LYRICS, language="fr")
    _check(build_aligner(aligner).align(item), UNICODE_LYRICS, english.duration_s)


@pytest.mark.parametrize("aligner", ["linear", "vocal_activity", "tts_dtw", "auto"])
def test_empty_lyrics(english, aligner):
    for lyrics in ("", " \n\n "):
        al = build_aligner(aligner).align(_item(english, lyrics=lyrics))
        assert al.word_onsets.size == 0 and al.char_onsets.size == len(lyrics)


def test_lyrics_longer_than_the_song_can_hold(english):
    lyrics = "\n".join(["the night is long and the road is cold and we sing"] * 60)
    item = _item(english, lyrics=lyrics)
    with pytest.raises(AlignerUnavailable, match="over 450 words/min: not this song.s lyrics"):
        TTSDTWAligner().align(item)
    al = build_aligner("auto").align(item)
    assert al.method == "vocal_activity" and "tts_dtw skipped" in al.notes, al.notes
    _check(al, lyrics, english.duration_s)


def test_a_language_espeak_lacks_falls_back(english):
    with pytest.raises(AlignerUnavailable, match="no espeak-ng voice"):
        TTSDTWAligner().align(_item(english, language="tlh"))
    al = build_aligner("auto").align(_item(english, language="Klingon"))
    assert al.method == "vocal_activity" and "no espeak-ng voice for language 'klingon'" in al.notes
    _check(al, english.lyrics, english.duration_s)


def test_language_is_guessed_when_the_metadata_has_none(english):
    al = build_aligner("auto").align(_item(english, language=None))
    assert al.method == "tts_dtw" and al.language == "en" and "guessed" in al.notes
    err = np.abs(al.word_onsets - english.word_onsets)
    assert err.mean() < 1.0
    # non-lexical lyrics carry no language: unknown, and the chain steps down
    al = build_aligner("auto").align(_item(english, lyrics="ooh ooh ooh\nla la la la", language=None))
    assert al.method == "vocal_activity" and al.language is None and "unknown" in al.notes


def test_without_espeak_the_chain_still_aligns(english, monkeypatch):
    from pipeline.align import tts

    def missing(self):
        raise tts.TTSUnavailable("libespeak-ng not found")

    monkeypatch.setattr(tts.Espeak, "__init__", missing)
    al = build_aligner("auto").align(_item(english))
    assert al.method == "vocal_activity" and "libespeak-ng not found" in al.notes


def test_characters_are_spread_between_word_onsets():
    lyrics = "ab cd\nef"
    chars = char_onsets_from_words(lyrics, np.array([1.0, 2.0, 4.0]), 10.0)
    assert chars[0] == 1.0 and chars[3] == 2.0 and chars[6] == 4.0
    assert 1.0 < chars[1] < chars[2] < 2.0 and np.all(np.diff(chars) >= 0) and chars[-1] <= 10.0


# another song's lyrics: as many lines and about as many words as the English speech song's
OTHER_LYRICS = "\n".join(["a quiet garden full of yellow flowers", "the teacher counted apples at the table",
                          "seven sailors painted the wooden boat", "my brother lost his keys again today",
                          "cold coffee waits beside the newspaper", "children laughing in the summer park"])


def test_confidence_tells_a_song_s_own_lyrics_from_another_song_s(english):
    own = TTSDTWAligner().align(_item(english))
    other = TTSDTWAligner().align(_item(english, lyrics=OTHER_LYRICS))
    assert own.confidence >= 0.5 > 0.25 > other.confidence, (own.notes, other.notes)
    assert "8 word-shuffled copies" in own.notes
    assert TTSDTWAligner().align(_item(english)).confidence == own.confidence  # seeded: a rerun agrees


def test_an_unsure_alignment_falls_back_to_the_linear_spread_and_says_so(english):
    item = _item(english, lyrics=OTHER_LYRICS)
    al = build_aligner("auto", min_confidence=0.5).align(item)
    assert low_confidence_fallback(al.method) and al.method.startswith("linear (fallback: tts_dtw confidence 0.")
    assert al.confidence < 0.5 and "word-shuffled" in al.notes and "language en (metadata)" in al.notes
    np.testing.assert_array_equal(al.char_onsets, build_aligner("linear").align(item).char_onsets)
    sure = build_aligner("auto", min_confidence=0.5).align(_item(english))
    assert sure.method == "tts_dtw" and not low_confidence_fallback(sure.method)
    assert not low_confidence_fallback("linear (fallback: 1.2 s vocal activity)")


def test_shuffled_words_keep_the_words_and_each_line_s_length():
    lyrics = "one two three\n\nfour five\nsix"
    out = shuffled_words(lyrics, np.random.default_rng(0))
    assert sorted(out.split()) == sorted(lyrics.split())
    assert [len(line.split()) for line in out.splitlines()] == [3, 0, 2, 1]
