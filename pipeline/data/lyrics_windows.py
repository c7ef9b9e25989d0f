"""The lyrics a training window conditions on, from the alignment stored in the shards.

As in the paper: for an audio window [offset, offset + length) the prior sees the
``n_chars`` characters centred on those sung inside it (``lyrics_window``). A song whose
alignment confidence is below ``min_confidence`` either falls back to the linear heuristic
(characters spread evenly over the song: still right on average) or is excluded from
training, as configured.

>>> windows = LyricsWindows("data/shards", LyricsWindowConfig(min_confidence=0.3))
>>> text = windows.window(song_id, offset=441_000, length=1_048_576)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.config import field
from pipeline.data.shards import SONGS, read_table


def lyrics_window(lyrics: str, char_onsets: np.ndarray, start_s: float, end_s: float, n_chars: int = 512) -> str:
    """The ``n_chars`` characters a training window [start_s, end_s) conditions on.

    As in the paper: the window is centred on the characters sung inside the audio window
    (their onsets fall in it), padded with the characters just before and after so the
    model always sees ``n_chars`` of context when the song has that many.
    """
    if not lyrics:
        return ""
    lo = lyrics_window_start(lyrics, char_onsets, start_s, end_s, n_chars)
    return lyrics[lo:lo + n_chars]


def lyrics_window_start(lyrics: str, char_onsets: np.ndarray, start_s: float, end_s: float, n_chars: int = 512) -> int:
    """Where ``lyrics_window``'s characters begin in ``lyrics``."""
    first = int(np.searchsorted(char_onsets, start_s, side="left"))
    last = int(np.searchsorted(char_onsets, end_s, side="left"))
    centre = (first + last) // 2
    return max(0, min(centre - n_chars // 2, len(lyrics) - n_chars))


@dataclass
class LyricsWindowConfig:
    n_chars: int = field(512, "characters of lyrics per training window (the paper's top level: 512)")
    min_confidence: float = field(0.0, "alignments below this confidence are not trusted (see low_confidence)")
    low_confidence: Literal["linear", "exclude"] = field(
        "linear", "linear: spread the song's characters evenly instead; exclude: leave the song out of training")


class LyricsWindows:
    def __init__(self, shards: str | Path, cfg: LyricsWindowConfig | None = None):
        self.cfg = cfg or LyricsWindowConfig()
        table = read_table(Path(shards), SONGS, ["song_id", "lyrics", "sample_rate", "num_samples", "duration_s",
                                                 "alignment_method", "alignment_confidence", "char_onsets"])
        self._songs: dict[str, dict] = {}
        self.sources: dict[str, str] = {}  # song_id -> "alignment: <method>" | "linear (confidence c < min)"
        self.excluded: dict[str, str] = {}  # song_id -> why it is left out
        for row in table.to_pylist() if table is not None else []:
            onsets = np.asarray(row["char_onsets"] or [], dtype=np.float32)
            trusted = row["alignment_confidence"] >= self.cfg.min_confidence and onsets.size == len(row["lyrics"])
            if trusted:
                self.sources[row["song_id"]] = f"alignment: {row['alignment_method']}"
            elif self.cfg.low_confidence == "exclude":
                self.excluded[row["song_id"]] = (f"alignment confidence {row['alignment_confidence']:.2f} < "
                                                 f"{self.cfg.min_confidence}")
                continue
            else:
                n = len(row["lyrics"])
                onsets = (np.arange(n) / max(n, 1) * row["duration_s"]).astype(np.float32)
                self.sources[row["song_id"]] = f"linear (confidence {row['alignment_confidence']:.2f} < {self.cfg.min_confidence})"
            self._songs[row["song_id"]] = {"lyrics": row["lyrics"], "onsets": onsets, "sample_rate": row["sample_rate"]}

    @property
    def song_ids(self) -> list[str]:
        """The songs training may draw windows from."""
        return sorted(self._songs)

    def window(self, song_id: str, offset: int, length: int) -> str:
        """The ``n_chars`` characters for samples [offset, offset + length) of the song."""
        if song_id in self.excluded:
            raise KeyError(f"song {song_id} is excluded from training: {self.excluded[song_id]}")
        song = self._songs[song_id]
        sr = song["sample_rate"]
        return lyrics_window(song["lyrics"], song["onsets"], offset / sr, (offset + length) / sr, self.cfg.n_chars)
