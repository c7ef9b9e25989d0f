import numpy as np
import pytest
import soundfile as sf

from pipeline import audio as audio_io
from pipeline.audio import AudioError, decode


def _tone(seconds, sr, channels=2):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * 440 * t)
    return np.stack([x, 0.5 * x], 1) if channels == 2 else x


@pytest.mark.parametrize("ext, subtype, sr, channels", [
    ("wav", "PCM_16", 48000, 2), ("wav", "PCM_24", 96000, 1), ("flac", "PCM_16", 22050, 2),
    ("ogg", "VORBIS", 32000, 1), ("mp3", "MPEG_LAYER_III", 44100, 2), ("wav", "FLOAT", 8000, 2),
])
def test_decode_any_format_to_44k_stereo(tmp_path, ext, subtype, sr, channels):
    path = tmp_path / f"x.{ext}"
    sf.write(path, _tone(3.0, sr, channels), sr, subtype=subtype)
    d = decode(path, 1.0, 60.0)
    assert d.samples.dtype == np.float32 and d.samples.shape[1] == 2
    assert abs(len(d.samples) / 44100 - 3.0) < 0.06  # mp3 encoder delay/padding
    assert d.source_sample_rate == sr and d.source_channels == channels
    if channels == 1:
        assert np.array_equal(d.samples[:, 0], d.samples[:, 1])
    # the 440 Hz tone survives resampling: its spectral peak stays at 440 Hz
    spec = np.abs(np.fft.rfft(d.samples[:44100, 0]))
    assert abs(np.argmax(spec) - 440) <= 2


def test_too_long_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(8000 * 50, np.float32), 8000)
    monkeypatch.setattr(audio_io.sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded a file the header said was too long"))
    with pytest.raises(AudioError, match="too long: 50.0 s"):
        decode(path, 1.0, 40.0)


def test_truncated_mp3_is_refused(tmp_path):
    path = tmp_path / "full.mp3"
    sf.write(path, _tone(30.0, 44100), 44100, format="MP3")
    data = path.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(AudioError, match="truncated|not a decodable"):
        decode(cut, 1.0, 60.0)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"just some text, nothing to hear\n" * 20, "text, not audio"),
    (bytes(range(256)) * 40, "not a decodable audio file"),
])
def test_non_audio_gives_a_clear_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        decode(path, 1.0, 60.0)


@pytest.mark.parametrize("encoding", ["pcm16", "flac"])
def test_segment_roundtrip_is_16_bit_exact(encoding):
    x = (np.random.default_rng(0).uniform(-1, 1, (10_000, 2))).astype(np.float32)
    y = audio_io.decode_segment(audio_io.encode_segment(x, encoding), encoding)
    assert y.shape == x.shape
    assert np.max(np.abs(y - x)) <= 1 / 32767 + 1e-6


def test_flac_and_pcm16_store_the_same_samples():
    x = (0.3 * np.sin(np.arange(50_000) / 7.0)[:, None] * np.ones((1, 2))).astype(np.float32)
    a = audio_io.decode_segment(audio_io.encode_segment(x, "pcm16"), "pcm16")
    b = audio_io.decode_segment(audio_io.encode_segment(x, "flac"), "flac")
    assert np.array_equal(a, b)  # FLAC is lossless over the same 16-bit quantisation


def _silence(path, seconds, sr, channels, **kw):
    with sf.SoundFile(path, "w", sr, channels, **kw) as fh:
        block = np.zeros((65536, channels), np.float32)
        for _ in range(int(seconds * sr) // 65536):
            fh.write(block)


@pytest.mark.parametrize("sr, channels, reason", [
    (655_350, 8, "sample rate 655350 Hz is outside"),  # the measured bomb's shape: 11 KB here, 25 GB decoded at 1,200 s
    (1, 2, "sample rate 1 Hz is outside"), (768_000, 2, "sample rate 768000 Hz"), (44_100, 9, "9 channels"),
])
def test_headers_beyond_the_limits_are_refused_before_decoding(tmp_path, monkeypatch, sr, channels, reason):
    path = tmp_path / "bomb.flac" if sr <= 655_350 and channels <= 8 else tmp_path / "bomb.wav"
    _silence(path, 2.0 if sr > 1 else 70_000, sr, channels)
    monkeypatch.setattr(audio_io.sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded a refused header"))
    with pytest.raises(AudioError, match=reason):
        decode(path, 1.0, 1200.0)


def test_a_header_that_lies_about_its_length_stops_at_the_cap(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((8000 * 50, 2), np.float32), 8000)
    real_info = audio_io.sf.info

    def lying_info(p):
        info = real_info(p)
        info.frames = 8000 * 5  # the header says 5 s; the stream holds 50
        return info

    monkeypatch.setattr(audio_io.sf, "info", lying_info)
    with pytest.raises(AudioError, match="decodes past max_seconds 40"):
        decode(path, 1.0, 40.0)


def test_non_finite_samples_and_limits_are_refused(tmp_path):
    x = np.zeros((44100 * 3, 2), np.float32)
    x[100_000, 1] = np.inf
    sf.write(tmp_path / "inf.wav", x, 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite samples"):
        decode(tmp_path / "inf.wav", 1.0, 60.0)
    with pytest.raises(ValueError, match="must be finite"):
        decode(tmp_path / "inf.wav", 1.0, float("inf"))
