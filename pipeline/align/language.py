"""The language of a song's lyrics: from its metadata, else a cheap guess from the text.

The guess uses py3langid (a naive-Bayes n-gram model that ships inside the package: no
download), restricted to the languages espeak-ng has a voice for, since the answer only
decides which voice the TTS+DTW aligner speaks with. Repetitive or non-lexical lyrics
("ooh ooh", "la la") carry little evidence: below ``min_probability`` the language is
unknown and the aligner chain falls back.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# ISO 639-1 code -> espeak-ng voice name (espeak-ng 1.51 refuses some long names, "fr-fr" among them)
ESPEAK_VOICES = {"en": "en-us", "fr": "fr", "es": "es", "de": "de", "it": "it", "pt": "pt", "nl": "nl", "pl": "pl",
                 "sv": "sv", "da": "da", "fi": "fi", "nb": "nb", "no": "nb", "cs": "cs", "ru": "ru", "tr": "tr", "ro": "ro",
                 "hu": "hu", "el": "el", "ca": "ca", "id": "id", "ja": "ja", "ko": "ko", "zh": "cmn"}
_NAMES = {"english": "en", "french": "fr", "spanish": "es", "german": "de", "italian": "it", "portuguese": "pt",
          "dutch": "nl", "polish": "pl", "swedish": "sv", "danish": "da", "finnish": "fi", "norwegian": "nb", "czech": "cs",
          "russian": "ru", "turkish": "tr", "romanian": "ro", "hungarian": "hu", "greek": "el", "catalan": "ca",
          "indonesian": "id", "japanese": "ja", "korean": "ko", "chinese": "zh", "mandarin": "zh"}


@dataclass
class Language:
    code: str | None  # ISO 639-1, or None when unknown
    source: str  # "metadata", "guessed (p=0.93)", or why it is unknown

    def describe(self) -> str:
        return f"{self.code or 'unknown'} ({self.source})"


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages([c for c in ESPEAK_VOICES if c in ident.labels])
    return ident


def normalise_language(value: str | None) -> str | None:
    """'French', 'fr', 'fr-FR', 'fr_CA' -> 'fr'; anything else -> the lower-cased value."""
    if not value or not value.strip():
        return None
    key = value.strip().lower()
    return _NAMES.get(key) or re.split(r"[-_]", key)[0]


def resolve_language(metadata_language: str | None, lyrics: str, min_probability: float = 0.5,
                     min_letters: int = 20) -> Language:
    code = normalise_language(metadata_language)
    if code:
        return Language(code, "metadata")
    letters = sum(ch.isalpha() for ch in lyrics)
    if letters < min_letters:
        return Language(None, f"no metadata; {letters} letters of lyrics are too few to guess")
    code, p = _identifier().classify(lyrics)
    if p < min_probability:
        return Language(None, f"no metadata; guess {code} has p={p:.2f} < {min_probability}")
    return Language(code, f"guessed (p={p:.2f})")
