import pytest

from pipeline.config import ConfigError, from_dict, parse_args
from pipeline.preprocess.config import PreprocessConfig


def test_yaml_then_flags_override(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("input: a.csv\noutput: out\ndecode:\n  max_seconds: 300\nshards:\n  encoding: pcm16\n")
    cfg = parse_args(PreprocessConfig, ["--config", str(cfg_file), "--decode.max_seconds", "90", "--progress", "false"])
    assert cfg.input == "a.csv" and cfg.decode.max_seconds == 90.0 and cfg.shards.encoding == "pcm16"
    assert cfg.progress is False and cfg.decode.min_seconds == 2.0  # untouched defaults survive


def test_bool_flag_without_value():
    assert parse_args(PreprocessConfig, ["--output", "o", "--demo"]).demo is True


@pytest.mark.parametrize("data, message", [
    ({"output": "o", "input": "i", "decod": {}}, "unknown key"),
    ({"output": "o", "input": "i", "decode": {"max_seconds": "long"}}, "expected float"),
    ({"output": "o", "input": "i", "shards": {"encoding": "mp3"}}, "not one of"),
    ({"output": "o"}, "--input is required"),
    ({"output": "o", "input": "i", "shards": {"segment_samples": 1000}}, "multiple of 128"),
    ({"output": "o", "input": "i", "align": {"aligner": "ctc"}}, "needs --align.ctc_model"),
    ({"output": "o", "input": "i", "align": {"aligner": "whisper"}}, "not one of"),
])
def test_bad_configs_fail_clearly(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(PreprocessConfig, data)


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        parse_args(PreprocessConfig, ["--help"])
    text = capsys.readouterr().out
    for flag in ("--input", "--output", "--decode.max_seconds", "--shards.encoding", "--separate.actors", "--config"):
        assert flag in text
