import numpy as np
import pytest
import soundfile as sf
import soxr

from pipeline.audio import decode
from pipeline.separate import build_separator
from pipeline.separate.activity import detect_vocal_activity
from pipeline.separate.evaluate import si_sdr


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Synthetic songs from a seed the separator was never tuned on, with their true stems."""
    from pipeline.demo_corpus import make_demo_corpus

    manifest = make_demo_corpus(tmp_path_factory.mktemp("sep"), songs=2, seconds=15.0, seed=11)
    songs = []
    for name, ext in (("demo_00", "wav"), ("demo_01", "flac")):
        mix = decode(manifest.parent / "audio" / f"{name}.{ext}", 1, 60).samples
        voc, sr = sf.read(manifest.parent / "stems" / f"{name}.vocals.wav", dtype="float32")
        voc = soxr.resample(voc, sr, 44100)
        n = min(len(mix), len(voc))
        songs.append((mix[:n], voc[:n]))
    return songs


def test_stems_have_the_mix_shape_and_sum_to_it(held_out):
    mix, _ = held_out[0]
    stems = build_separator("dsp").separate(mix, 44100)
    assert stems.vocals.shape == mix.shape == stems.accompaniment.shape
    assert stems.vocals.dtype == np.float32
    assert np.allclose(stems.vocals + stems.accompaniment, mix, atol=1e-5)


def test_vocals_beat_the_mixture_floor(held_out):
    sep = build_separator("dsp")
    for mix, voc in held_out:
        gain = si_sdr(voc, sep.separate(mix, 44100).vocals) - si_sdr(voc, mix)
        assert gain > 1.5, f"separation gains only {gain:.2f} dB SI-SDR over returning the mixture"


def test_mono_input_and_silence():
    sep = build_separator("dsp")
    mono = np.repeat(np.sin(np.arange(44100) / 10.0)[:, None], 2, 1).astype(np.float32) * 0.3
    assert sep.separate(mono, 44100).vocals.shape == mono.shape
    silent = np.zeros((44100, 2), np.float32)
    out = sep.separate(silent, 44100)
    assert np.all(np.isfinite(out.vocals)) and np.abs(out.vocals).max() == 0


def test_vocal_activity_follows_the_singing(held_out):
    mix, voc = held_out[0]
    stems = build_separator("dsp").separate(mix, 44100)
    va = detect_vocal_activity(stems.vocals, mix, 44100)
    frame = int(va.hop_seconds * 44100)
    truth = np.array([np.abs(voc[i * frame:(i + 1) * frame]).max() > 0.01 for i in range(va.active.size)])
    precision = (va.active & truth).sum() / max(1, va.active.sum())
    recall = (va.active & truth).sum() / max(1, truth.sum())
    f1 = 2 * precision * recall / (precision + recall)
    assert precision > truth.mean() + 0.15 and f1 > 0.7, (precision, recall, truth.mean())  # well above chance
    assert build_separator("dsp").name == "dsp"
    with pytest.raises(ValueError, match="unknown separator"):
        build_separator("magic")
