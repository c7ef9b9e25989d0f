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
    # ranges (issue 13): every number finite and within its field's bounds
    ({"output": "o", "input": "i", "ingest": {"hash_chunk_bytes": 0}}, "hash_chunk_bytes must be >= 4096, got 0"),
    ({"output": "o", "input": "i", "decode": {"truncation_tolerance": -1}}, "truncation_tolerance must be a finite number >= 0"),
    ({"output": "o", "input": "i", "decode": {"max_seconds": "inf"}}, "max_seconds must be a finite number > 0, got inf"),
    ({"output": "o", "input": "i", "decode": {"max_seconds": "nan"}}, "max_seconds must be a finite number"),
    ({"output": "o", "input": "i", "separate": {"cpus_per_actor": 0}}, "cpus_per_actor must be a finite number > 0"),
    ({"output": "o", "input": "i", "shards": {"songs_per_shard": -3}}, "songs_per_shard must be >= 1"),
    ({"output": "o", "input": "i", "decode": {"max_sample_rate": 1000}}, "min_sample_rate <= max_sample_rate"),
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


def test_bounds_of_the_other_jobs():
    from pipeline.sample.config import SampleConfig
    from pipeline.train.prior_job import TrainPriorConfig
    from pipeline.train.vqvae_job import TrainVQVAEConfig

    with pytest.raises(SystemExit):
        parse_args(TrainVQVAEConfig, ["--model.width", "0"])
    with pytest.raises(ConfigError, match="model.width must be >= 1, got 0"):
        from_dict(TrainPriorConfig, {"model": {"width": 0}})
    with pytest.raises(ConfigError, match="optim.lr must be a finite number > 0, got nan"):
        from_dict(TrainPriorConfig, {"optim": {"lr": "nan"}})
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        from_dict(SampleConfig, {"temperature": 0})


def test_defaults_outlive_a_submitted_jobs_working_dir(monkeypatch, tmp_path):
    from pipeline.services import PROJECT_ROOT, runs_dir
    from pipeline.tracking import tracking_uri
    from pipeline.train.config import CheckpointConfig

    monkeypatch.delenv("JUKEBOX_RUNS_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert runs_dir() == PROJECT_ROOT / "runs"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray's job supervisor sets for the entrypoint
    monkeypatch.setenv("HOME", str(tmp_path))
    assert runs_dir() == tmp_path / ".local" / "share" / "jukebox" / "runs"
    monkeypatch.setenv("JUKEBOX_RUNS_DIR", str(tmp_path / "durable"))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'durable' / 'mlflow.db'}"
    assert CheckpointConfig().storage_uri() == str(tmp_path / "durable" / "train")


def test_an_override_of_one_yaml_section_does_not_reach_the_sections_sharing_its_anchor(tmp_path):
    from pipeline.flow.config import PipelineConfig, prepare

    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text("vqvae:\n  top: &v {preset: tiny, optim: {lr: 0.002}}\n  middle: *v\n  bottom: *v\n")
    cfg = parse_args(PipelineConfig, ["--config", str(cfg_file), "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                      "--vqvae.top.optim.lr", "0.003"], prepare=prepare)
    assert (cfg.vqvae.top.optim.lr, cfg.vqvae.middle.optim.lr, cfg.vqvae.bottom.optim.lr) == (0.003, 0.002, 0.002)
