"""Typed configuration of the preprocessing job (YAML + command-line overrides)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.audio import AudioLimits
from pipeline.config import ConfigError, field
from pipeline.services import RUNS_HELP


@dataclass
class IngestConfig:
    max_genre_words: int = field(5, "genre words kept per song (the paper used at most 5)", ge=1)
    hash_chunk_bytes: int = field(4 << 20, "read size while hashing audio content", ge=4096)
    max_file_gb: float = field(32.0, "audio files larger than this are quarantined before anything reads them (GiB)",
                               ge=None, gt=0)
    max_manifest_rows: int = field(10_000_000, "a manifest with more rows is refused before any work", ge=1)
    max_manifest_mb: float = field(8192.0, "a manifest that decodes to more text than this is refused (MiB; a Parquet file "
                                           "can declare far more than its size)", ge=None, gt=0)
    corpus_root: str = field("", "audio and lyrics paths of the input must resolve (symlinks followed) inside this folder, "
                                 "else the input is quarantined; 'off' allows any path; default: off for a local run, the "
                                 "input's folder under ray job submit (a manifest must not read the cluster's other files)")

    def max_file_bytes(self) -> int:
        return int(self.max_file_gb * 2**30)

    def manifest_limits(self):
        from pipeline.preprocess.manifest import ManifestLimits

        return ManifestLimits(self.max_manifest_rows, int(self.max_manifest_mb * 2**20))

    def confine_to(self, input_path: str) -> Path | None:
        """The folder inputs must stay in, or None."""
        from pipeline.services import SUBMITTED_JOB_ENV

        if self.corpus_root.lower() == "off":
            return None
        if self.corpus_root:
            return Path(self.corpus_root).expanduser().resolve()
        if SUBMITTED_JOB_ENV not in os.environ:
            return None
        path = Path(input_path).expanduser().resolve()
        return path if path.is_dir() else path.parent


@dataclass
class DecodeConfig:
    min_seconds: float = field(2.0, "shorter inputs are quarantined")
    max_seconds: float = field(1200.0, "longer inputs are quarantined before decoding (no out-of-memory)", ge=None, gt=0)
    truncation_tolerance: float = field(0.02, "quarantine if decoded length < (1 - this) x the header's length", lt=1)
    min_sample_rate: int = field(8_000, "inputs at a lower rate are quarantined (a 1 Hz header is not audio)", ge=1)
    max_sample_rate: int = field(384_000, "inputs at a higher rate are quarantined from the header (decompression bombs)", ge=1)
    max_channels: int = field(8, "inputs with more channels are quarantined from the header", ge=1)

    def limits(self) -> AudioLimits:
        return AudioLimits(self.min_sample_rate, self.max_sample_rate, self.max_channels)


@dataclass
class SeparateConfig:
    separator: Literal["auto", "dsp", "spleeter"] = field(
        "auto", "auto: spleeter when separate.model is given, else dsp (no weights)")
    model: str = field("", "Spleeter model: a folder, models:/jukebox-separator@current, or spleeter:2stems (downloads)")
    spleeter_python: str = field("", "Spleeter environment's python (default: $JUKEBOX_SPLEETER_PYTHON, else .venv-spleeter/bin/python)")
    actors: int = field(0, "actor-pool size; 0 = one per CPU of the cluster")
    cpus_per_actor: float = field(1.0, "CPUs reserved by each separator actor", ge=None, gt=0)
    threads: int = field(1, "threads inside each separator actor (torch for dsp, TensorFlow for spleeter)", ge=1)


@dataclass
class AlignConfig:
    aligner: Literal["auto", "ctc", "tts_dtw", "vocal_activity", "linear"] = field(
        "auto", "auto: ctc (when align.ctc_model is set) -> tts_dtw -> vocal_activity -> linear, the first that can align a song")
    ctc_model: str = field("", "CTC checkpoint for the ctc aligner: a folder (save_pretrained) or a hub id")
    ctc_device: str = field("auto", "cpu | cuda | auto (cuda when there is one)")
    min_language_probability: float = field(0.5, "songs without a language: guess it from the lyrics when this sure, else unknown", le=1)
    min_confidence: float = field(0.5, "an alignment less sure than this is replaced by the linear spread (the song's row says so); "
                                       "0 keeps every alignment", le=1)
    confidence_shuffles: int = field(8, "tts_dtw: word-shuffled copies of the lyrics its confidence compares with (each costs "
                                        "one more alignment; 0: no extra cost and a confidence that does not tell "
                                        "wrong lyrics apart: set align.min_confidence 0 with it)", le=64)
    repeats: bool = field(True, "tts_dtw: a second path that anchors repeated blocks of lyrics (choruses) where the music "
                                "repeats (chroma self-similarity)")
    vocal_share: float = field(0.25, "vocal-activity: share of the mix's voice-band energy in the vocal stem", le=1)
    vocal_floor_db: float = field(20.0, "vocal-activity: frames quieter than the loudest vocal frame by more are silent")


@dataclass
class ShardConfig:
    encoding: Literal["pcm16", "flac"] = field("flac", "segment audio encoding (chosen by bench/bench_encoding.py)")
    segment_samples: int = field(262_144, "samples per stored segment (~5.9 s at 44.1 kHz)", ge=128)
    segments_per_row_group: int = field(4, "Parquet row group size of the segments table (the unit of a random read)", ge=1)
    songs_per_shard: int = field(16, "songs per committed shard (one songs + one segments file)", ge=1)
    compression: str = field("none", "Parquet compression of the audio column (audio is already dense)")


@dataclass
class VocabConfig:
    min_artist_count: int = field(1, "artists with fewer songs map to the 'unknown' id")
    min_genre_count: int = field(1, "genre words with fewer songs map to the 'unknown' id")


@dataclass
class PreprocessConfig:
    input: str = field("", "manifest (.csv, .jsonl, .parquet) or a folder of audio with sidecar metadata")
    output: str = field("", "output folder: songs/, segments/, quarantine/, vocab/, summary.json")
    demo: bool = field(False, "generate the synthetic demo corpus into <output>/../demo_corpus and use it as input")
    ray_address: str | None = field(None, "Ray cluster address; default: $RAY_ADDRESS, else an embedded local Ray")
    num_cpus: int | None = field(None, "CPUs of the embedded local Ray (default: all)", ge=1)
    mlflow_tracking_uri: str | None = field(None, "default: $MLFLOW_TRACKING_URI, else sqlite in " + RUNS_HELP)
    experiment: str = field("jukebox-preprocess", "MLflow experiment name")
    progress: bool = field(True, "Ray Data progress bars")
    ingest: IngestConfig = field(IngestConfig())
    decode: DecodeConfig = field(DecodeConfig())
    separate: SeparateConfig = field(SeparateConfig())
    align: AlignConfig = field(AlignConfig())
    shards: ShardConfig = field(ShardConfig())
    vocab: VocabConfig = field(VocabConfig())

    def validate(self) -> None:
        if not self.output:
            raise ConfigError("--output is required")
        if not self.input and not self.demo:
            raise ConfigError("--input is required (or --demo true)")
        if self.align.aligner == "ctc" and not self.align.ctc_model:
            raise ConfigError("--align.aligner ctc needs --align.ctc_model (a checkpoint folder or a hub id)")
        if self.decode.min_seconds < 0 or self.decode.max_seconds <= self.decode.min_seconds:
            raise ConfigError("decode: need 0 <= min_seconds < max_seconds")
        if self.decode.min_sample_rate > self.decode.max_sample_rate:
            raise ConfigError("decode: need min_sample_rate <= max_sample_rate")
        if self.shards.segment_samples <= 0 or self.shards.segment_samples % 128:
            raise ConfigError("shards.segment_samples must be a positive multiple of 128 (the top level's hop)")
        if self.shards.songs_per_shard < 1 or self.shards.segments_per_row_group < 1:
            raise ConfigError("shards.songs_per_shard and shards.segments_per_row_group must be >= 1")
