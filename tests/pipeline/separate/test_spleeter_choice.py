"""Separator choice and model checks: the driver-side part, no Spleeter environment needed."""

import json
from dataclasses import replace

import pytest

from pipeline.config import ConfigError
from pipeline.preprocess.config import SeparateConfig
from pipeline.separate.choose import choose_separator
from pipeline.separate.spleeter import SeparatorModelError, check_model_folder, checkpoint_step


def _model(folder, step=300, stems=("vocals", "accompaniment")):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps({"instrument_list": list(stems)}))
    (folder / f"model.ckpt-{step}.index").write_bytes(b"x")
    return folder


def test_model_folder_checks(tmp_path):
    with pytest.raises(SeparatorModelError, match="does not exist"):
        check_model_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeparatorModelError, match="no params.json"):
        check_model_folder(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "params.json").write_text("{}")
    with pytest.raises(SeparatorModelError, match="no checkpoint.*random weights"):
        check_model_folder(tmp_path / "noweights")
    with pytest.raises(SeparatorModelError, match="2-stem"):
        check_model_folder(_model(tmp_path / "four", stems=("vocals", "drums", "bass", "other")))
    good = _model(tmp_path / "good")
    (good / "model.ckpt-20.index").write_bytes(b"x")
    assert check_model_folder(good) == good and checkpoint_step(good) == 300


def test_choice(tmp_path):
    cfg = SeparateConfig()
    dsp = choose_separator(cfg, tmp_path)  # auto, no model: the DSP fallback
    assert dsp.name == "dsp" and dsp.version.startswith("centre-harmonic")
    with pytest.raises(ConfigError, match="needs separate.model"):
        choose_separator(replace(cfg, separator="spleeter"), tmp_path)
    with pytest.raises(ConfigError, match="Spleeter environment is missing"):
        choose_separator(replace(cfg, model=str(_model(tmp_path / "m")), spleeter_python=str(tmp_path / "no-python")), tmp_path)
    fake_python = tmp_path / "python"
    fake_python.write_text("")
    with pytest.raises(ConfigError, match="no checkpoint"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "params.json").write_text("{}")
        choose_separator(replace(cfg, model=str(tmp_path / "bad"), spleeter_python=str(fake_python)), tmp_path)
    choice = choose_separator(replace(cfg, model=str(_model(tmp_path / "m2")), spleeter_python=str(fake_python)), tmp_path)
    assert choice.name == "spleeter" and choice.version.endswith("@step-300")
    assert choice.runtime_env["py_executable"] == str(fake_python) and "PYTHONPATH" in choice.runtime_env["env_vars"]
    with pytest.raises(ConfigError, match="is not in the registry"):
        choose_separator(replace(cfg, model="models:/nothing@current", spleeter_python=str(fake_python)), tmp_path,
                         f"sqlite:///{tmp_path / 'm.db'}")


def test_training_finds_stems_in_both_folder_layouts(tmp_path):
    from pipeline.separate.train import find_stems

    for name in ("a", "b"):
        for stem in ("mix", "vocals", "accompaniment"):
            (tmp_path / "flat" / f"{name}.{stem}.wav").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "flat" / f"{name}.{stem}.wav").write_bytes(b"")
        for stem in ("mixture", "vocals", "accompaniment", "drums"):
            (tmp_path / "musdb" / name / f"{stem}.wav").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "musdb" / name / f"{stem}.wav").write_bytes(b"")
    (tmp_path / "flat" / "c.mix.wav").write_bytes(b"")  # no vocals for c: not a triple
    flat = find_stems(tmp_path / "flat")
    assert [r["mix_path"].rsplit("/", 1)[-1] for r in flat] == ["a.mix.wav", "b.mix.wav"]
    assert flat[0]["vocals_path"].endswith("a.vocals.wav") and flat[0]["accompaniment_path"].endswith("a.accompaniment.wav")
    musdb = find_stems(tmp_path / "musdb")
    assert len(musdb) == 2 and musdb[1]["vocals_path"].endswith("b/vocals.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no stems found"):
        find_stems(tmp_path / "empty")
