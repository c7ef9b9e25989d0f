"""The frames the TTS+DTW aligner compares (``dtw.py``): mel power, normalised low cepstra,
and a soft singing score from the vocal stem's loudness."""

from __future__ import annotations

import numpy as np

FEATURE_RATE = 16_000
HOP = 320  # 20 ms frames


def mel(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """40-band mel power, ``FEATURE_RATE`` Hz audio in ``HOP``-sample frames, 80-7600 Hz."""
    import librosa

    y = librosa.resample(np.ascontiguousarray(x, dtype=np.float32), orig_sr=sample_rate, target_sr=FEATURE_RATE, res_type="soxr_hq")
    return librosa.feature.melspectrogram(y=y, sr=FEATURE_RATE, n_fft=1024, hop_length=HOP, n_mels=40, fmin=80, fmax=7600)


def cepstra(mel_power: np.ndarray, n_mfcc: int, weight_frames: np.ndarray | None = None) -> np.ndarray:
    """c1..c(n_mfcc-1), normalised by the mean and spread of ``weight_frames`` (all when few), unit norm per frame."""
    import librosa

    c = librosa.feature.mfcc(S=librosa.power_to_db(mel_power), n_mfcc=n_mfcc)[1:]
    ref = c[:, weight_frames] if weight_frames is not None and weight_frames.sum() > 10 else c
    c = (c - ref.mean(axis=1, keepdims=True)) / (ref.std(axis=1, keepdims=True) + 1e-6)
    return (c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-9)).astype(np.float32)


def vocalness(vocal_mel: np.ndarray, quantiles: tuple[float, float], smooth_frames: int) -> np.ndarray:
    """Soft 0..1 singing score per frame from the vocal stem's loudness."""
    import scipy.ndimage as ndi

    loud = ndi.uniform_filter1d(np.log(vocal_mel.sum(axis=0) + 1e-10), max(1, smooth_frames))
    lo, hi = np.quantile(loud, quantiles)
    return np.clip((loud - lo) / (hi - lo + 1e-9), 0.0, 1.0).astype(np.float32)
