import numpy as np
import pytest

from pipeline.align.language import normalise_language, resolve_language
from pipeline.align.tts import Espeak, TTSUnavailable


def test_espeak_reports_every_word_onset_in_order():
    lyrics = "hello there my friend\n\nit's 12 o'clock, déjà vu!"
    speech = Espeak().synthesize(lyrics, "en")
    assert speech.word_onsets.shape == (len(lyrics.split()),) and np.all(np.diff(speech.word_onsets) > 0)
    assert speech.line_onsets.tolist()[0] == 0.0 and len(speech.line_onsets) == 2
    assert speech.word_onsets[4] == pytest.approx(speech.line_onsets[1])
    assert speech.word_onsets[-1] < len(speech.samples) / speech.sample_rate
    slow = Espeak().synthesize(lyrics, "en", words_per_minute=90)
    assert len(slow.samples) > 1.4 * len(speech.samples)


def test_voices_by_language_name_or_code():
    assert Espeak.voice_for("French") == "fr" and Espeak.voice_for("pt-BR") == "pt" and Espeak.voice_for("es") == "es"
    assert Espeak.voice_for("Klingon") is None and Espeak.voice_for(None) is None
    with pytest.raises(TTSUnavailable):
        Espeak().synthesize("qapla", "tlh")


def test_language_from_metadata_else_guessed():
    assert normalise_language("German") == "de" and normalise_language("fr_CA") == "fr" and normalise_language(" ") is None
    assert resolve_language("Spanish", "whatever").code == "es"
    guess = resolve_language(None, "gerade denk ich mir wie schön das leben ist, alles läuft gut, wie gut das tut")
    assert guess.code == "de" and guess.source.startswith("guessed")
    assert resolve_language(None, "la la").code is None  # too little text to guess
    assert resolve_language(None, "ooh ooh ooh ooh ooh ooh ooh ooh", min_probability=0.99).code is None
