"""The preprocessing stages (``pipeline.data.stage``: resources, ``setup()`` once per worker,
``__call__(batch)``, and a quarantine row for every failure): ingest, decode, separate, align.

Arrays cross stage boundaries as raw float32 bytes (Arrow binary columns): no pickled
numpy, so a stage may run in another Python environment (Spleeter's).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipeline import audio as audio_io
from pipeline.align import AlignerUnavailable, AlignInput, build_aligner
from pipeline.data.stage import RowStage
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.ingest import ingest_row
from pipeline.separate.activity import VocalActivity, detect_vocal_activity

# AlignerUnavailable: a single configured aligner (not "auto") that cannot align this song.
INPUT_ERRORS = (audio_io.AudioError, AlignerUnavailable, UnicodeError, FileNotFoundError)


class Stage(RowStage):
    """A preprocessing stage: built from the job's config."""

    input_errors = INPUT_ERRORS

    def __init__(self, cfg: PreprocessConfig, crash_dir: str | None = None):
        super().__init__(crash_dir)
        self.cfg = cfg


class IngestStage(Stage):
    name = "ingest"
    batch_size = 128  # hashing is cheap: amortise the per-batch cost (a million rows are ~8,000 batches)
    outputs = {"file_size": -1, "file_mtime_ns": -1, "song_id": "", "lyrics": "", "lyrics_missing": True}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        d = self.cfg.decode
        return ingest_row(row, self.cfg.ingest.hash_chunk_bytes, self.cfg.ingest.max_file_bytes(),
                          functools.partial(audio_io.check_header, max_seconds=d.max_seconds, limits=d.limits()))


class DecodeStage(Stage):
    name = "decode"
    outputs = {"audio": b"", "num_samples": 0, "source_sample_rate": 0, "source_channels": 0,
               "source_format": "", "duration_s": 0.0, "peak": 0.0}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        d = self.cfg.decode
        decoded = audio_io.decode(row["source"], d.min_seconds, d.max_seconds, d.truncation_tolerance, d.limits())
        s = decoded.samples
        return {"audio": audio_io.to_bytes(s), "num_samples": len(s), "source_sample_rate": decoded.source_sample_rate,
                "source_channels": decoded.source_channels, "source_format": decoded.source_format,
                "duration_s": len(s) / audio_io.TARGET_SAMPLE_RATE, "peak": float(np.abs(s).max())}


class SeparateStage(Stage):
    """Actor-pool stage: the separator (and its model) is loaded once per actor."""

    name = "separate"
    uses_actors = True
    outputs = {"vocals": b"", "vocal_activity": b"", "vocal_activity_hop_s": 0.0, "vocal_activity_ratio": 0.0,
               "separator": "", "separator_version": ""}

    def __init__(self, cfg: PreprocessConfig, choice=None, crash_dir: str | None = None):
        super().__init__(cfg, crash_dir)
        self.choice = choice  # SeparatorChoice, resolved and checked by the driver

    def setup(self) -> None:
        from pipeline.separate import build_separator

        choice = self.choice
        if choice and choice.name == "spleeter":  # TensorFlow's threads come from the runtime_env
            name, options = "spleeter", {"model": choice.model, "version": choice.version}
        else:
            name, options = "dsp", {"threads": self.cfg.separate.threads}
        self.separator = build_separator(name, **options)
        self.separator.load()
        # ~58 MB per 3-minute song: ship the vocal stem downstream only to an aligner that reads it
        self.keep_vocals = _aligner(self.cfg).needs_vocals

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        mix = audio_io.from_bytes(row["audio"])
        stems = self.separator.separate(mix, audio_io.TARGET_SAMPLE_RATE)
        a = self.cfg.align
        va = detect_vocal_activity(stems.vocals, mix, audio_io.TARGET_SAMPLE_RATE, a.vocal_share, a.vocal_floor_db)
        return {"vocals": audio_io.to_bytes(stems.vocals) if self.keep_vocals else b"",
                "vocal_activity": va.active.astype(np.uint8).tobytes(),
                "vocal_activity_hop_s": va.hop_seconds, "vocal_activity_ratio": va.ratio,
                "separator": self.separator.name, "separator_version": self.separator.version}


class AlignStage(Stage):
    name = "align"
    outputs = {"char_onsets": b"", "word_char_starts": b"", "word_onsets": b"", "alignment_method": "",
               "alignment_confidence": 0.0, "alignment_coverage": 0.0, "alignment_language": "", "alignment_notes": ""}

    def setup(self) -> None:
        self.aligner = _aligner(self.cfg)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        va = VocalActivity(np.frombuffer(row["vocal_activity"], dtype=np.uint8).astype(bool), row["vocal_activity_hop_s"])
        if not row["lyrics"]:
            empty = np.zeros(0, np.float32).tobytes()
            return {"char_onsets": empty, "word_char_starts": empty, "word_onsets": empty, "alignment_method": "none (no lyrics)",
                    "alignment_confidence": 0.0, "alignment_coverage": 0.0, "alignment_language": "", "alignment_notes": "",
                    "vocals": b""}
        item = AlignInput(lyrics=row["lyrics"], duration_s=row["duration_s"], sample_rate=audio_io.TARGET_SAMPLE_RATE,
                          language=row["language"] or None, vocal_activity=va,
                          # the aligners read the vocal stem; the mix (~60 MB a song) only stands in without one
                          vocals=audio_io.from_bytes(row["vocals"]) if row["vocals"] else None,
                          mix=None if row["vocals"] else audio_io.from_bytes(row["audio"]))
        al = self.aligner.align(item)
        return {"char_onsets": al.char_onsets.astype("<f4").tobytes(), "word_char_starts": al.word_char_starts.astype("<i4").tobytes(),
                "word_onsets": al.word_onsets.astype("<f4").tobytes(), "alignment_method": al.method,
                "alignment_confidence": float(al.confidence), "alignment_coverage": coverage(al.word_onsets, va),
                "alignment_language": al.language or "", "alignment_notes": al.notes,
                "vocals": b""}  # the vocal stem is not stored: drop it before the writer


def _aligner(cfg: PreprocessConfig):
    a = cfg.align
    return _cached_aligner(a.aligner, a.ctc_model, a.min_language_probability, a.ctc_device, a.min_confidence,
                           a.confidence_shuffles, a.repeats)


@functools.lru_cache(maxsize=4)
def _cached_aligner(name: str, ctc_model: str, min_language_probability: float, device: str, min_confidence: float,
                    shuffles: int, repeats: bool):
    # align runs as Ray tasks, one stage object per batch; the worker process lives on, and so
    # does its aligner (a CTC model is loaded once per worker, not once per song)
    return build_aligner(name, ctc_model=ctc_model, min_language_probability=min_language_probability, device=device,
                         min_confidence=min_confidence, confidence_shuffles=shuffles, repeats=repeats)


def coverage(word_onsets: np.ndarray, va: VocalActivity) -> float:
    """Share of word onsets that fall on a vocal-active frame (1.0 = every word where singing was heard)."""
    if word_onsets.size == 0 or va.active.size == 0:
        return 0.0
    frames = np.minimum((word_onsets / va.hop_seconds).astype(np.int64), va.active.size - 1)
    return float(va.active[frames].mean())


PIPELINE: tuple[type[Stage], ...] = (DecodeStage, SeparateStage, AlignStage)
