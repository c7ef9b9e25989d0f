"""Audio decoding, resampling and the two encodings a segment can be stored in.

Decoding goes through libsndfile (python-soundfile; its wheels bundle MP3, FLAC, Ogg
Vorbis/Opus and WAV support, so no ffmpeg binary is needed) and resampling through soxr
at its high-quality setting. Every failure raises ``AudioError`` with a reason a person can
act on; libsndfile's own message for a non-audio file ("does not exist or is not a
regular file") is misleading, so the content is sniffed first.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".w64", ".rf64")
TARGET_SAMPLE_RATE = 44_100


class AudioError(ValueError):
    """An input that cannot become training audio; the message is the quarantine reason."""


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32, shape (num_samples, 2), at TARGET_SAMPLE_RATE
    source_sample_rate: int
    source_channels: int
    source_format: str
    declared_seconds: float


def sniff(path: str | Path) -> str | None:
    """A reason the file is not audio at all, or None if it might be."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return "empty file (0 bytes)"
    text_like = sum(32 <= b < 127 or b in (9, 10, 13) for b in head) / len(head)
    if text_like > 0.97 and not head.startswith((b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM")):
        return f"file is text, not audio (starts with {head[:40]!r})"
    return None


def probe(path: str | Path) -> sf._SoundFileInfo:
    """Header information without decoding; raises AudioError for undecodable files."""
    reason = sniff(path)
    if reason:
        raise AudioError(reason)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        detail = str(exc).split(": ", 1)[-1]
        if "does not exist" in detail or "not a regular file" in detail:
            detail = "no audio stream it can decode (corrupt, truncated before the first frame, or another format)"
        raise AudioError(f"not a decodable audio file ({Path(path).suffix or 'no extension'}): libsndfile found {detail}") from None


@dataclass(frozen=True)
class AudioLimits:
    """What a header may declare before anything is decoded. A tiny file can declare hours of
    8 channels at 655 kHz (an 11 KB FLAC was measured to decode to 25 GB at 1,200 s): the rate,
    channels and frames are checked first, and decoding then runs in blocks under a running cap."""

    min_sample_rate: int = 8_000
    max_sample_rate: int = 384_000  # DXD masters are 352.8/384 kHz
    max_channels: int = 8

    def check(self, sample_rate: int, channels: int) -> None:
        if not self.min_sample_rate <= sample_rate <= self.max_sample_rate:
            raise AudioError(f"sample rate {sample_rate} Hz is outside {self.min_sample_rate}-{self.max_sample_rate} Hz")
        if not 1 <= channels <= self.max_channels:
            raise AudioError(f"{channels} channels; at most {self.max_channels} are decoded")


def check_header(path: str | Path, max_seconds: float, limits: AudioLimits = AudioLimits()) -> sf._SoundFileInfo:
    """The header's rate, channels and length against the limits, reading nothing else."""
    info = probe(path)
    limits.check(info.samplerate, info.channels)
    declared = info.frames / info.samplerate
    if declared > max_seconds:
        raise AudioError(f"too long: {declared:.1f} s > max_seconds {max_seconds:g}")
    return info


BLOCK_FRAMES = 1 << 16  # decoded per read: 2 MB at 8 channels


def decode(path: str | Path, min_seconds: float, max_seconds: float, truncation_tolerance: float = 0.02,
           limits: AudioLimits = AudioLimits()) -> DecodedAudio:
    """Decode, check length and integrity, resample to 44.1 kHz stereo float32.

    The rate, channels and duration are checked from the header before decoding, so a 3-hour
    file is refused without allocating it. Decoding then reads blocks of ``BLOCK_FRAMES``, keeps
    two channels of each and resamples it as a stream (soxr's streaming output is bit-identical
    to its one-shot output), so memory is the 44.1 kHz stereo result plus one block, and a
    stream that decodes past ``max_seconds`` (headers can lie) stops there. A stream that
    decodes to less than its header declares (a truncated download) is refused: its lyrics
    would describe audio that is not there.
    """
    if not (math.isfinite(max_seconds) and math.isfinite(min_seconds)):
        raise ValueError(f"min_seconds and max_seconds must be finite (got {min_seconds}, {max_seconds})")
    info = check_header(path, max_seconds, limits)
    sr, channels = int(info.samplerate), int(info.channels)
    declared = info.frames / sr
    max_frames = int(max_seconds * sr) + 1
    stream = soxr.ResampleStream(sr, TARGET_SAMPLE_RATE, 2, dtype="float32", quality="HQ") if sr != TARGET_SAMPLE_RATE else None
    chunks, frames = [], 0
    try:
        with sf.SoundFile(str(path)) as fh:
            # read() until it returns nothing (blocks() pads to the header's frame count: a truncated
            # MP3 would pass as whole)
            while len(block := fh.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):
                frames += len(block)
                if frames > max_frames:  # MP3 without a Xing frame count, or a lying header
                    raise AudioError(f"too long: decodes past max_seconds {max_seconds:g} (its header declares {declared:.1f} s)")
                if not np.isfinite(block).all():
                    raise AudioError(f"decoded audio contains NaN or infinite samples (near {frames / sr:.1f} s)")
                # mono duplicated (the row is flagged mono_source); WAV/FLAC channel order puts front left/right first
                block = np.repeat(block, 2, axis=1) if channels == 1 else block[:, :2]
                chunks.append(stream.resample_chunk(block) if stream else block.copy())
            if stream:
                chunks.append(stream.resample_chunk(np.zeros((0, 2), np.float32), last=True))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"decoding failed: {exc}") from None
    seconds = frames / sr
    if seconds < min_seconds:
        raise AudioError(f"too short: {seconds:.2f} s < min_seconds {min_seconds:g}")
    if declared > 0 and seconds < declared * (1 - truncation_tolerance):
        raise AudioError(f"truncated: decoded {seconds:.1f} s of the {declared:.1f} s its header declares")
    audio = np.concatenate(chunks) if chunks else np.zeros((0, 2), np.float32)
    return DecodedAudio(
        samples=np.ascontiguousarray(audio, dtype=np.float32),
        source_sample_rate=sr,
        source_channels=channels,
        source_format=f"{info.format}/{info.subtype}",
        declared_seconds=declared,
    )


# --- crossing process boundaries: raw little-endian float32 bytes, never pickled arrays
# (the Spleeter environment runs numpy 1.x; Arrow binary columns cross cleanly).

def to_bytes(samples: np.ndarray) -> bytes:
    return np.ascontiguousarray(samples, dtype="<f4").tobytes()


def from_bytes(data: bytes, channels: int = 2) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").reshape(-1, channels)


# --- segment encodings in the shards (chosen by measurement: see README "Audio encoding")

def _to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def encode_segment(samples: np.ndarray, encoding: str) -> bytes:
    """(n, 2) float32 in [-1, 1] -> stored bytes. Both encodings hold the same int16 samples
    (we quantise, not libsndfile, whose float scaling differs between write and read)."""
    pcm = _to_int16(samples)
    if encoding == "pcm16":
        return pcm.tobytes()
    if encoding == "flac":
        buf = io.BytesIO()
        sf.write(buf, pcm, TARGET_SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    raise ValueError(f"unknown audio encoding {encoding!r}")


def decode_segment(data: bytes, encoding: str, channels: int = 2) -> np.ndarray:
    """Stored bytes -> (n, channels) float32."""
    if encoding == "pcm16":
        pcm = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    elif encoding == "flac":
        pcm, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    else:
        raise ValueError(f"unknown audio encoding {encoding!r}")
    return pcm.astype(np.float32) / 32767.0
