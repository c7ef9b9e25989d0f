"""Vocal activity: which frames of a song have singing, from any separator's vocal stem.

A frame is active when the vocal stem holds a real share of the mix's energy in the
voice band (100 Hz - 4 kHz) and is loud in absolute terms relative to the song's
loudest vocal frame; a median filter removes flicker shorter than ~0.3 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVITY_HOP = 2048  # samples at 44.1 kHz: 46.4 ms per activity frame


@dataclass
class VocalActivity:
    active: np.ndarray  # bool per frame
    hop_seconds: float

    @property
    def ratio(self) -> float:
        return float(self.active.mean()) if self.active.size else 0.0

    def frame_times(self) -> np.ndarray:
        return np.arange(self.active.size) * self.hop_seconds


def _band_energy(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """Voice-band energy per frame (non-overlapping Hann frames, centred like torch.stft).

    numpy only: this also runs inside the Spleeter environment, which has no torch.
    """
    half = ACTIVITY_HOP // 2
    x = np.pad(np.asarray(mono, dtype=np.float32), (half, half), mode="reflect" if len(mono) > half else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(x, ACTIVITY_HOP)[::ACTIVITY_HOP]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(ACTIVITY_HOP) / ACTIVITY_HOP)).astype(np.float32)  # periodic Hann
    freqs = np.fft.rfftfreq(ACTIVITY_HOP, 1 / sample_rate)
    band = (freqs >= 100) & (freqs <= 4000)
    return (np.abs(np.fft.rfft(frames * window, axis=-1)[:, band]) ** 2).sum(axis=1)


def detect_vocal_activity(vocals: np.ndarray, mix: np.ndarray, sample_rate: int, share: float = 0.25,
                          floor_db: float = 20.0, smooth_s: float = 0.3) -> VocalActivity:
    hop_seconds = ACTIVITY_HOP / sample_rate
    if vocals.shape[0] == 0:
        return VocalActivity(np.zeros(0, dtype=bool), hop_seconds)
    voc = _band_energy(vocals.mean(axis=1), sample_rate)
    mix_e = _band_energy(mix.mean(axis=1), sample_rate)
    loud = 10 * np.log10(voc + 1e-12) > 10 * np.log10(voc.max() + 1e-12) - floor_db
    active = (voc / (mix_e + 1e-12) > share) & loud & (voc > 1e-8)
    import scipy.ndimage as ndi

    k = max(3, int(round(smooth_s / hop_seconds)) | 1)
    active = ndi.median_filter(active.astype(np.uint8), size=k, mode="nearest").astype(bool)
    return VocalActivity(active, hop_seconds)
