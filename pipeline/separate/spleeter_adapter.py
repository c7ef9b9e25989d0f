"""A Spleeter audio adapter on libsndfile + soxr, so training and separation need no ffmpeg binary.

Imported only inside the Spleeter environment (``spleeter train -a
pipeline.separate.spleeter_adapter.SoundfileAudioAdapter``).
"""

from __future__ import annotations

import numpy as np
import soundfile as sf
import soxr
from spleeter.audio.adapter import AudioAdapter


class SoundfileAudioAdapter(AudioAdapter):
    def load(self, audio_descriptor, offset=None, duration=None, sample_rate=None, dtype=b"float32"):
        path = audio_descriptor.decode() if isinstance(audio_descriptor, bytes) else str(audio_descriptor)
        rate = sf.info(path).samplerate
        start = int(round((offset or 0.0) * rate))
        frames = int(round(duration * rate)) if duration else -1
        data, rate = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
        if sample_rate and int(sample_rate) != rate:
            data = soxr.resample(data, rate, int(sample_rate), quality="HQ")
            rate = int(sample_rate)
        return np.ascontiguousarray(data, dtype=dtype.decode() if isinstance(dtype, bytes) else dtype), rate

    def save(self, path, data, sample_rate, codec=None, bitrate=None):
        sf.write(str(path), data, int(sample_rate))
