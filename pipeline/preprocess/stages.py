"""The preprocessing stages. Each one is a class with its resources and batch size, a
``setup()`` that loads what it needs once per worker, and ``__call__(batch)`` that maps one
batch of rows to another. A row that fails keeps flowing with ``status="quarantined"``,
the failing stage and the reason, so nothing is lost; later stages pass it through.

Arrays cross stage boundaries as raw float32 bytes (Arrow binary columns): no pickled
numpy, so a stage may run in another Python environment (Spleeter's).
"""

from __future__ import annotations

import functools
import traceback
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline import audio as audio_io
from pipeline.align import AlignerUnavailable, AlignInput, build_aligner
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.ingest import ingest_row
from pipeline.separate.activity import VocalActivity, detect_vocal_activity

# What a failure says about the input, which decides whether a rerun tries it again:
# - "input": the file's content fails under this config (corrupt, too long, not audio): skipped
#   until the file or the config changes;
# - "transient": the file could not be read (I/O error, permissions, a stale network mount): tried
#   again (a missing file is an "input" one: its fingerprint changes when it appears);
# - "internal": a bug of ours: tried again (after the fix).
# AlignerUnavailable: a single configured aligner (not "auto") that cannot align this song.
INPUT_ERRORS = (audio_io.AudioError, AlignerUnavailable, UnicodeError, FileNotFoundError)
TRANSIENT_ERRORS = (OSError,)


class Stage:
    name: ClassVar[str] = "stage"
    # Whole CPUs on purpose: Ray starts one worker process per concurrently running task, and
    # fractional CPUs let many run at once; each process start costs ~1.5 CPU-s (measured).
    num_cpus: ClassVar[float] = 1.0
    batch_size: ClassVar[int] = 1
    uses_actors: ClassVar[bool] = False  # True: setup() is expensive, keep it per actor
    outputs: ClassVar[dict[str, Any]] = {}  # columns this stage adds, with the value a failed row gets

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg
        self._ready = False

    def setup(self) -> None:
        """Load models / build state once per worker."""

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._ready:
            self.setup()
            self._ready = True
        rows = batch.to_pylist()
        for row in rows:
            if row["status"] == "ok":
                try:
                    row.update(self.process_row(row))
                except INPUT_ERRORS as exc:
                    quarantine(row, self.name, str(exc), "input")
                except TRANSIENT_ERRORS as exc:
                    quarantine(row, self.name, str(exc), "transient")
                except ValueError as exc:
                    quarantine(row, self.name, str(exc), "input")
                except Exception as exc:  # noqa: BLE001 - one bad song must not end a corpus run
                    where = traceback.extract_tb(exc.__traceback__)[-1]
                    quarantine(row, self.name, f"internal error {type(exc).__name__}: {exc} "
                                               f"(at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})", "internal")
            for column, default in self.outputs.items():
                row.setdefault(column, default)
        return pa.Table.from_pylist(rows)


def quarantine(row: dict[str, Any], stage: str, error: str, kind: str) -> None:
    row.update(status="quarantined", stage=stage, error=error, error_kind=kind)
    for heavy in ("audio", "vocals"):  # free the memory of a rejected song right away
        if heavy in row:
            row[heavy] = b""


class IngestStage(Stage):
    name = "ingest"
    batch_size = 16  # hashing is cheap: amortise the per-task cost
    outputs = {"file_size": -1, "file_mtime_ns": -1, "song_id": "", "lyrics": "", "lyrics_missing": True}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return ingest_row(row, self.cfg.ingest.hash_chunk_bytes)


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

    def __init__(self, cfg: PreprocessConfig, choice=None):
        super().__init__(cfg)
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
    return _cached_aligner(a.aligner, a.ctc_model, a.min_language_probability, a.ctc_device)


@functools.lru_cache(maxsize=4)
def _cached_aligner(name: str, ctc_model: str, min_language_probability: float, device: str):
    # align runs as Ray tasks, one stage object per batch; the worker process lives on, and so
    # does its aligner (a CTC model is loaded once per worker, not once per song)
    return build_aligner(name, ctc_model=ctc_model, min_language_probability=min_language_probability, device=device)


def coverage(word_onsets: np.ndarray, va: VocalActivity) -> float:
    """Share of word onsets that fall on a vocal-active frame (1.0 = every word where singing was heard)."""
    if word_onsets.size == 0 or va.active.size == 0:
        return 0.0
    frames = np.minimum((word_onsets / va.hop_seconds).astype(np.int64), va.active.size - 1)
    return float(va.active[frames].mean())


PIPELINE: tuple[type[Stage], ...] = (DecodeStage, SeparateStage, AlignStage)
