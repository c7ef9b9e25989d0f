"""A vocal separator that needs no weights: a harmonic, centre-panned soft mask.

Two cues that hold for most produced songs, combined as soft masks on the STFT:

1. *Harmonic vs percussive* (Fitzgerald's median-filter HPSS): voice is harmonic
   (stable over ~0.25 s, peaky across frequency) while drums are broadband, so a
   temporal median against a frequency median separates voice from percussion.
2. *Stereo position* (Avendano & Jot): lead vocals are mixed to the centre, so a
   time-frequency bin whose left and right magnitudes agree is more likely voice.
   Mono sources skip this cue.

A third cue, removing the part that is sustained over ~1 s (Tachibana's first HPSS
stage), was measured and dropped: it removed held sung notes with the chords (held-out
SI-SDR fell below the mixture floor; see README "Vocal extraction").

Median filters dominate the cost of HPSS, so the mask is estimated on a grid pooled 4x
in time and 2x in frequency and interpolated back to the full STFT: ~8x less work, and
the mask is smooth anyway. Vocals = mask x mix; accompaniment = mix - vocals (exact sum).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from pipeline.separate.base import Separator, Stems


class CentreHarmonicSeparator(Separator):
    name = "dsp"
    version = "centre-harmonic-2"

    def __init__(self, n_fft: int = 2048, hop: int = 512, harmonic_s: float = 0.25, percussive_hz: float = 650.0,
                 centre_power: float = 2.0, low_hz: float = 80.0, high_hz: float = 11000.0, threads: int = 1):
        self.n_fft, self.hop = n_fft, hop
        self.harmonic_s, self.percussive_hz = harmonic_s, percussive_hz
        self.centre_power, self.low_hz, self.high_hz = centre_power, low_hz, high_hz
        self.pool_t, self.pool_f = 4, 2
        self.threads = max(1, threads)

    def load(self) -> None:
        torch.set_num_threads(self.threads)  # default 1: one separator per CPU, the actor pool is the parallelism

    def separate(self, samples: np.ndarray, sample_rate: int) -> Stems:
        x = torch.from_numpy(np.ascontiguousarray(samples.T, dtype=np.float32))  # (2, n)
        window = torch.hann_window(self.n_fft)
        spec = torch.stft(x, self.n_fft, self.hop, window=window, return_complex=True)  # (2, F, T)
        mask = self._mask(spec, sample_rate, stereo=not torch.equal(x[0], x[1]))
        vocals = torch.istft(spec * mask, self.n_fft, self.hop, window=window, length=x.shape[1]).T.numpy()
        vocals = np.ascontiguousarray(vocals, dtype=np.float32)
        return Stems(vocals=vocals, accompaniment=(samples - vocals).astype(np.float32))

    def _mask(self, spec: torch.Tensor, sample_rate: int, stereo: bool) -> torch.Tensor:
        n_bins, n_frames = spec.shape[1:]
        mid = (spec[0] + spec[1]).abs() / 2
        # pooled grid where the median filters run
        coarse = F.avg_pool2d(mid[None, None], (self.pool_f, self.pool_t), ceil_mode=True)[0, 0].numpy()
        frame_s = self.hop * self.pool_t / sample_rate
        bin_hz = sample_rate / self.n_fft * self.pool_f
        harmonic = ndi.median_filter(coarse, size=(1, _odd(self.harmonic_s / frame_s)), mode="reflect")
        percussive = ndi.median_filter(coarse, size=(_odd(self.percussive_hz / bin_hz), 1), mode="reflect")
        eps = 1e-10
        m = harmonic**2 / (harmonic**2 + percussive**2 + eps)
        mask = F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], size=(n_bins, n_frames),
                             mode="bilinear", align_corners=False)[0, 0]
        freqs = torch.arange(n_bins) * sample_rate / self.n_fft
        mask = mask * ((freqs >= self.low_hz) & (freqs <= self.high_hz)).float()[:, None]
        if stereo:
            left, right = spec[0].abs(), spec[1].abs()
            similarity = 2 * left * right / (left**2 + right**2 + eps)  # 1 where centred
            mask = mask * similarity**self.centre_power
        return mask.clamp(0, 1)


def _odd(n: float) -> int:
    return max(3, int(round(n)) | 1)
