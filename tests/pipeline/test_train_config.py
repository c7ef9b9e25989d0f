"""The training configs fail early and clearly; the DeepSpeed config follows the runtime's."""

from pathlib import Path

import pytest

from models.vqvae import PAPER
from pipeline.config import ConfigError, from_dict, parse_args
from pipeline.registry import card_tags
from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig
from pipeline.train.runtime import deepspeed_config
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


@pytest.mark.parametrize("cls,data,message", [
    (RuntimeConfig, {"zero_stage": 4}, "zero_stage must be >= 0 and <= 3"),
    (RuntimeConfig, {"zero_stage": 0, "offload": True}, "offload needs ZeRO stage >= 1"),
    (RuntimeConfig, {"ema_decay": 1.0}, "ema_decay must be a finite number >= 0 and < 1"),
    (RuntimeConfig, {"grad_accum": 0}, "grad_accum must be >= 1"),
    (RuntimeConfig, {"cpus_per_worker": 0}, "cpus_per_worker must be a finite number > 0"),
    (RuntimeConfig, {"inject_fault": "boom:3"}, "inject_fault must be"),
    (RuntimeConfig, {"autocast": "bf16", "precision": "bf16"}, "autocast works on fp32 weights"),
    (OptimConfig, {"lr": "nan"}, "lr must be a finite number > 0"),
    (OptimConfig, {"betas": [0.9]}, "betas must be two numbers"),
    (OptimConfig, {"betas": [0.9, 1.0]}, "optim.betas must be a finite number"),
    (OptimConfig, {"weight_decay": -0.1}, "weight_decay must be a finite number >= 0"),
    (OptimConfig, {"decay": "exponential"}, "not one of"),
    (CheckpointConfig, {"every": 0}, "every must be >= 1"),
    (CheckpointConfig, {"every": 200, "milestone_every": 300}, "multiple of checkpoint.every"),
    (CheckpointConfig, {"run_name": "../elsewhere"}, "plain name"),
])
def test_bad_runtime_configs(cls, data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(cls, data)


def test_deepspeed_config_follows_the_runtime():
    cfg = from_dict(RuntimeConfig, {"zero_stage": 3, "batch_size": 4, "grad_accum": 2, "total_steps": 100, "offload": True})
    ds = deepspeed_config(cfg, from_dict(OptimConfig, {"grad_clip": 0.5}), world=2, device="cpu")
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (16, 2, 0.5)
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]  # fp32 on CPU
    assert "scheduler" not in ds  # the schedule is the runtime's own: a function of the step
    assert deepspeed_config(from_dict(RuntimeConfig, {"precision": "bf16"}), OptimConfig(), 1, "cpu")["bf16"]["enabled"]


def test_schedule_warms_up_then_decays_to_zero():
    linear = OptimConfig(lr=1.0, warmup_steps=4, decay="linear")
    factors = [linear.lr_factor(s, 20) for s in range(20)]
    assert factors[:4] == [0.2, 0.4, 0.6, 0.8] and factors[4] == 1.0
    assert factors[12] == 0.5 and all(a > b for a, b in zip(factors[4:], factors[5:])) and linear.lr_factor(20, 20) == 0.0
    cosine = OptimConfig(warmup_steps=0, decay="cosine")
    assert cosine.lr_factor(0, 10) == 1.0 and abs(cosine.lr_factor(5, 10) - 0.5) < 1e-9 and cosine.lr_factor(10, 10) < 1e-12
    assert OptimConfig(warmup_steps=2, decay="constant").lr_factor(50, 60) == 1.0


def test_weight_decay_goes_to_weight_matrices_only():
    from toy_training import ToyModel

    from pipeline.train.runtime import param_groups

    model = ToyModel(8)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["inp.weight", "out.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["bias_table.weight", "inp.bias", "norm.bias", "norm.weight", "out.bias"]
    model.no_weight_decay = lambda: {"out.weight"}  # a model may name more
    assert [names[id(p)] for p in param_groups(model, 0.01)[0]["params"]] == ["inp.weight"]


def test_a_tied_weight_is_one_parameter_without_decay():
    import torch

    from pipeline.train.runtime import param_groups

    embed, out = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
    out.weight = embed.weight  # an output layer sharing the token embedding (the upsamplers)
    model = torch.nn.Sequential(embed, torch.nn.Linear(4, 4), out)
    groups = param_groups(model, 0.01)
    assert sum(len(g["params"]) for g in groups) == 2 + 1  # the tied weight once, the middle layer's weight and bias
    assert groups[0]["params"] == [model[1].weight] and any(p is embed.weight for p in groups[1]["params"])
    torch.optim.AdamW(groups)  # no "parameters appear in more than one group"


def test_run_names_differ_between_levels_and_jobs():
    from toy_training import ToyTask

    from pipeline.train.runtime import run_name

    a, b = run_name(ToyTask(), CheckpointConfig(), "bottom"), run_name(ToyTask(), CheckpointConfig(), "middle")
    assert a != b and "bottom" in a and str(__import__("os").getpid()) in a
    assert run_name(ToyTask(), CheckpointConfig(run_name="mine")) == "mine"


def test_card_tags_are_strings_with_nested_parts_as_json():
    tags = card_tags({"hop_length": 8, "config": {"width": 64}, "lineage": {"manifest_sha256": "ab"}})
    assert tags == {"hop_length": "8", "config": '{"width": 64}', "lineage": '{"manifest_sha256": "ab"}'}


def test_partitioned_ema_follows_the_weights_and_reassembles(tmp_path):
    import torch

    from pipeline.train.weights import EMA_DIR, EMAReader, PartitionedEMA

    model = torch.nn.Linear(3, 5)  # 15 weights: not a multiple of the world size 2
    with torch.no_grad():
        model.weight.fill_(0.0)
        model.bias.fill_(0.0)
    emas = [PartitionedEMA(model, 0.9, rank, 2) for rank in range(2)]
    with torch.no_grad():
        model.weight.copy_(torch.arange(15.0).view(5, 3))
        model.bias.fill_(1.0)
    for ema in emas:
        ema.update()
        ema.update()
        ema.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / EMA_DIR).iterdir()) == ["meta.json", "rank0.safetensors", "rank1.safetensors"]
    assert emas[0].shadow["weight"].numel() == 8 and emas[1].shadow["weight"].numel() == 7  # each rank a half
    full = EMAReader(tmp_path).get("weight")
    assert torch.allclose(full, torch.arange(15.0).view(5, 3) * (1 - 0.9 ** 2)) and full.dtype == torch.float32
    emas[1].load(tmp_path)


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


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "infra" / "train").glob("*.yaml")),
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
