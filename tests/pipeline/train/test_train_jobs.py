"""The training jobs' configs fail early and clearly, and every shipped one builds its models."""

from pathlib import Path

import pytest

from models.vqvae import PAPER
from pipeline.config import ConfigError, from_dict, parse_args
from pipeline.train.vqvae_job import TrainVQVAEConfig, check_shards


def test_presets_give_each_level_its_paper_hop_and_overrides_apply():
    for level, hop in (("bottom", 8), ("middle", 32), ("top", 128)):
        cfg = from_dict(TrainVQVAEConfig, {"level": level})
        assert cfg.model_config() == PAPER[level] and cfg.model_config().hop_length == hop and cfg.window() == 393_216
    cfg = parse_args(TrainVQVAEConfig, ["--level", "bottom", "--model.width", "32", "--model.depth", "4", "--sample_length", "65536"])
    model = cfg.model_config()
    assert (model.width, model.depth, model.codebook_size, cfg.window()) == (32, 4, 2048, 65536)


@pytest.mark.parametrize("data,message", [
    ({"level": "middle", "model": {"downs_t": [3, 2, 2, 1]}}, None),  # extra level, same middle hop: fine
    ({"level": "middle", "model": {"downs_t": [3, 3, 2]}}, "hop of 64; the middle level's hop is 32"),
    ({"level": "top", "sample_length": 1000}, "not divisible by the top level's hop 128"),
    ({"level": "bottom", "holdout": 1.0}, "holdout"),
    ({"level": "sideways"}, "not one of"),
])
def test_bad_job_configs_fail_before_anything_starts(data, message):
    if message is None:
        from_dict(TrainVQVAEConfig, data)
        return
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainVQVAEConfig, data)


def test_missing_or_too_short_shards_are_config_errors(tmp_path, demo_shards):
    with pytest.raises(ConfigError, match="--shards is required"):
        check_shards(from_dict(TrainVQVAEConfig, {}))
    with pytest.raises(ConfigError, match="no shards at"):
        check_shards(from_dict(TrainVQVAEConfig, {"shards": str(tmp_path)}))
    with pytest.raises(ConfigError, match="longer than one window"):  # 12-s demo songs, 8.9-s paper windows, half held out
        check_shards(from_dict(TrainVQVAEConfig, {"shards": str(demo_shards), "holdout": 0.5}))
    check_shards(from_dict(TrainVQVAEConfig, {"shards": str(demo_shards)}))


def test_prior_overrides_drop_the_conditioner_or_the_timing():
    from pipeline.train.prior_job import PriorOverrides, TrainPriorConfig

    top = TrainPriorConfig(level="top", preset="tiny", model=PriorOverrides(timing=False)).model_config()
    assert top.timing is False and top.lyrics is not None
    middle = TrainPriorConfig(level="middle", preset="tiny", model=PriorOverrides(conditioner=False)).model_config()
    assert middle.upsampler is None
    assert TrainPriorConfig(level="top", preset="tiny").model_config().timing is True


def test_prior_dropout_overrides_reach_the_model_and_are_bounded(tmp_path):
    from pipeline.train.prior_job import TrainPriorConfig

    (tmp_path / "songs").mkdir()
    base = {"preset": "tiny", "shards": str(tmp_path)}
    model = from_dict(TrainPriorConfig, {**base, "model": {"emb_dropout": 0.3, "resid_dropout": 0.1}}).model_config()
    assert model.emb_dropout == 0.3 and model.transformer.resid_dropout == 0.1
    assert TrainPriorConfig(preset="paper").model_config().transformer.resid_dropout == 0.0  # the paper's runs: none
    with pytest.raises(ConfigError, match="resid_dropout"):
        from_dict(TrainPriorConfig, {**base, "model": {"resid_dropout": 1.0}})


@pytest.mark.parametrize("shifts", ["0", "13", "-1,-1", "nan"])
def test_pitch_shifts_must_be_distinct_nonzero_semitones_within_an_octave(tmp_path, shifts):
    from pipeline.train.prior_job import TrainPriorConfig

    (tmp_path / "songs").mkdir()
    with pytest.raises(ConfigError, match="encode_pitch_shifts"):
        from_dict(TrainPriorConfig, {"preset": "tiny", "shards": str(tmp_path), "encode_pitch_shifts": shifts}).validate()
    ok = from_dict(TrainPriorConfig, {"preset": "tiny", "shards": str(tmp_path), "encode_pitch_shifts": "-2,-1,1,2"})
    assert ok.encode_pitch_shifts == (-2.0, -1.0, 1.0, 2.0)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[3] / "infra" / "train").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_training_config_loads_and_builds_its_model(tmp_path, path):
    import yaml

    from pipeline.train.prior_job import TrainPriorConfig
    from pipeline.train.vqvae_job import TrainVQVAEConfig

    (tmp_path / "songs").mkdir()
    cls = TrainPriorConfig if path.name.startswith("prior") else TrainVQVAEConfig
    cfg = from_dict(cls, {**yaml.safe_load(path.read_text()), "shards": str(tmp_path)})
    for level in ("top", "middle", "bottom"):
        cfg.level = level
        cfg.model_config().validate()
