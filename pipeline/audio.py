"""Audio decoding, resampling and the two encodings a segment can be stored in.

Decoding goes through libsndfile (python-soundfile; its wheels bundle MP3, FLAC, Ogg
Vorbis/Opus and WAV support, so no ffmpeg binary is needed) and resampling through soxr
at its high-quality setting. Every failure raises ``AudioError`` with a reason a person can
act on; libsndfile's own message for a non-audio file ("does not exist or is not a
regular file") is misleading, so the content is sniffed first.
"""

from __future__ import annotations

import io
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


def decode(path: str | Path, min_seconds: float, max_seconds: float, truncation_tolerance: float = 0.02) -> DecodedAudio:
    """Decode, check length and integrity, resample to 44.1 kHz stereo float32.

    The duration is checked from the header before decoding, so a 3-hour file is refused
    without allocating it. A stream that decodes to less than its header declares (a
    truncated download) is refused: its lyrics would describe audio that is not there.
    """
    info = probe(path)
    declared = info.frames / info.samplerate if info.samplerate else 0.0
    if declared > max_seconds:
        raise AudioError(f"too long: {declared:.1f} s > max_seconds {max_seconds:g}")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"decoding failed: {exc}") from None
    seconds = len(audio) / sr if sr else 0.0
    if seconds < min_seconds:
        raise AudioError(f"too short: {seconds:.2f} s < min_seconds {min_seconds:g}")
    if seconds > max_seconds:  # headers can lie (MP3 without a Xing frame count)
        raise AudioError(f"too long: {seconds:.1f} s > max_seconds {max_seconds:g}")
    if declared > 0 and seconds < declared * (1 - truncation_tolerance):
        raise AudioError(f"truncated: decoded {seconds:.1f} s of the {declared:.1f} s its header declares")
    if not np.isfinite(audio).all():
        raise AudioError("decoded audio contains NaN or infinite samples")
    channels = audio.shape[1]
    if channels == 1:
        audio = np.repeat(audio, 2, axis=1)  # mono duplicated; the row is flagged mono_source
    elif channels > 2:
        audio = audio[:, :2]  # WAV/FLAC channel order puts front left/right first
    if sr != TARGET_SAMPLE_RATE:
        audio = soxr.resample(audio, sr, TARGET_SAMPLE_RATE, quality="HQ")
    return DecodedAudio(
        samples=np.ascontiguousarray(audio, dtype=np.float32),
        source_sample_rate=int(sr),
        source_channels=int(channels),
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
