"""Lyrics text as the pipeline stores it: read from a manifest value (a .txt/.lrc path or the
text itself) and normalised the one way every reader and writer agrees on."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

LYRICS_FILE_EXTENSIONS = (".txt", ".lrc")


def normalise_lyrics(text: str) -> str:
    """NFC, unified newlines, no trailing spaces, at most one blank line between paragraphs."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# The longest song lyrics run to ~20 KB; six times that is not a song's (and espeak would speak it).
MAX_LYRICS_BYTES = 128 * 1024


class LyricsError(ValueError):
    """Lyrics that cannot be a song's: the message is the quarantine reason."""


def is_lyrics_file(ref: str) -> bool:
    """A manifest's lyrics value names a file (one line ending in .txt/.lrc), not the text itself."""
    return ref.lower().endswith(LYRICS_FILE_EXTENSIONS) and "\n" not in ref


def read_lyrics(ref: str) -> str:
    """Lyrics text from a manifest value: a .txt path (a regular file, at most MAX_LYRICS_BYTES),
    or the text itself."""
    if is_lyrics_file(ref):
        p = Path(ref)
        if not p.exists():
            raise FileNotFoundError(f"lyrics file not found: {ref}")
        if not p.is_file():  # a FIFO or a device would block the reader forever
            raise LyricsError(f"lyrics {ref} is not a regular file")
        with open(p, "rb") as fh:
            raw = fh.read(MAX_LYRICS_BYTES + 1)
        if len(raw) > MAX_LYRICS_BYTES:
            raise LyricsError(f"lyrics file {ref} is over {MAX_LYRICS_BYTES // 1024} KB")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")  # legacy Windows lyrics files
        return normalise_lyrics(text)
    if len(ref.encode("utf-8", errors="surrogatepass")) > MAX_LYRICS_BYTES:
        raise LyricsError(f"lyrics text is over {MAX_LYRICS_BYTES // 1024} KB")
    return normalise_lyrics(ref)


# The characters a lyrics encoder reads (the original's vocabulary is the same size, 80): id 0 is
# padding (a window shorter than the model's), id 1 any other character; accents are stripped
# first (NFKD), so "café" reads as "cafe".
LYRICS_ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   " \n'\",.:;!?-()[]&")
PAD, OTHER = 0, 1
LYRICS_VOCAB_SIZE = len(LYRICS_ALPHABET) + 2
_IDS = {c: i + 2 for i, c in enumerate(LYRICS_ALPHABET)}


def lyrics_tokens(text: str, n_chars: int) -> list[int]:
    """``n_chars`` ids for a window's text, left-padded with PAD (the text is at most n_chars long)."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    ids = [_IDS.get(c, OTHER) for c in plain][-n_chars:] if n_chars else []
    return [PAD] * (n_chars - len(ids)) + ids
