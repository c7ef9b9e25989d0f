"""The CTC aligner, with a tiny wav2vec2 model trained here on espeak-ng speech (no download)."""

import numpy as np
import pytest
from toy_ctc import SAMPLE_RATE, make_utterances, train_toy_ctc

from pipeline.align import AlignerUnavailable, AlignInput, build_aligner
from pipeline.align.ctc import CTCAligner, forced_align


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    return train_toy_ctc(tmp_path_factory.mktemp("ctc") / "toy-ctc", steps=600)


def test_forced_align_follows_the_posteriors():
    import torch

    blank = 0
    # frames: blank blank a a blank b blank blank
    best = [0, 0, 1, 1, 0, 2, 0, 0]
    lp = torch.full((len(best), 3), -5.0)
    lp[torch.arange(len(best)), torch.tensor(best)] = -0.01
    states, score = forced_align(lp.log_softmax(-1), [1, 2], blank)
    assert states.tolist() == [0, 0, 1, 1, 2, 3, 4, 4] and np.isfinite(score)
    # a repeated character needs a blank between its two frames: "aa" cannot fit in 2 frames
    with pytest.raises(AlignerUnavailable):
        forced_align(lp[:2].log_softmax(-1), [1, 1], blank)


def test_ctc_aligns_held_out_speech_within_a_tenth_of_a_second(toy_model):
    aligner = CTCAligner(str(toy_model))
    errors = []
    for u in make_utterances(25, seed=12345):  # the training set used seed 0
        al = aligner.align(AlignInput(u.text, len(u.audio) / SAMPLE_RATE, SAMPLE_RATE, "en", vocals=u.audio[:, None]))
        assert al.method == "ctc" and np.all(np.diff(al.word_onsets) >= 0) and 0 < al.confidence <= 1
        errors.append(np.abs(al.word_onsets - u.word_onsets))
    aae = np.concatenate(errors).mean()
    assert aae <= 0.1, aae


def test_ctc_handles_characters_outside_its_vocabulary(toy_model):
    u = make_utterances(1, seed=7)[0]
    text = "42 " + u.text.replace(" ", " ¿¡ ", 1) + " ♪"
    al = CTCAligner(str(toy_model)).align(AlignInput(text, len(u.audio) / SAMPLE_RATE, SAMPLE_RATE, "en", vocals=u.audio[:, None]))
    assert al.word_onsets.shape == (len(text.split()),) and np.all(np.diff(al.word_onsets) >= 0)
    with pytest.raises(AlignerUnavailable, match="vocabulary"):
        CTCAligner(str(toy_model)).align(AlignInput("¿¡ ♪", 1.0, SAMPLE_RATE, "en", vocals=u.audio[:, None]))


def test_auto_puts_ctc_first_and_falls_back_without_weights(toy_model, tmp_path):
    u = make_utterances(1, seed=8)[0]
    item = AlignInput(u.text, len(u.audio) / SAMPLE_RATE, SAMPLE_RATE, "en", vocals=u.audio[:, None])
    assert build_aligner("auto", ctc_model=str(toy_model)).align(item).method == "ctc"
    al = build_aligner("auto", ctc_model=str(tmp_path / "missing")).align(item)
    assert al.method == "tts_dtw" and "ctc skipped: cannot load the CTC model" in al.notes
    with pytest.raises(ValueError, match="ctc_model"):
        build_aligner("ctc")


def test_the_align_stage_runs_the_configured_chain(toy_model):
    import pyarrow as pa
    import soxr

    from pipeline import audio as audio_io
    from pipeline.config import from_dict
    from pipeline.preprocess.config import PreprocessConfig
    from pipeline.preprocess.stages import AlignStage

    u = make_utterances(1, seed=9)[0]
    stereo = np.repeat(soxr.resample(u.audio, SAMPLE_RATE, 44100)[:, None], 2, axis=1).astype(np.float32)
    row = {"status": "ok", "lyrics": u.text, "duration_s": len(stereo) / 44100, "language": "English",
           "vocal_activity": np.ones(len(stereo) // 2048, np.uint8).tobytes(), "vocal_activity_hop_s": 2048 / 44100,
           "audio": audio_io.to_bytes(stereo), "vocals": audio_io.to_bytes(stereo)}
    results = {}
    for aligner, extra in (("auto", {"ctc_model": str(toy_model)}), ("tts_dtw", {}), ("ctc", {"ctc_model": "/nonexistent"})):
        cfg = from_dict(PreprocessConfig, {"input": "x", "output": "x", "align": {"aligner": aligner, **extra}})
        results[aligner] = AlignStage(cfg)(pa.Table.from_pylist([dict(row)])).to_pylist()[0]
    ok = results["auto"]
    assert ok["status"] == "ok" and ok["alignment_method"] == "ctc" and ok["alignment_language"] == "en"
    onsets = np.frombuffer(ok["word_onsets"], "<f4")
    assert np.abs(onsets - u.word_onsets * 1.0).mean() < 0.15
    assert results["tts_dtw"]["status"] == "ok" and results["tts_dtw"]["alignment_method"] == "tts_dtw"
    # a single aligner that cannot work is a quarantine record with the reason, not a crash
    assert results["ctc"]["status"] == "quarantined" and "cannot load the CTC model" in results["ctc"]["error"]
