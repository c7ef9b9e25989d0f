"""The training configs fail early and clearly; the DeepSpeed config follows the runtime's."""

import json

import pytest

from models.vqvae import PAPER
from pipeline.config import ConfigError, from_dict, parse_args
from pipeline.train.run import _card_tags
from pipeline.train.runtime import RuntimeConfig, checkpointed_step, deepspeed_config
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


@pytest.mark.parametrize("data,message", [
    ({"zero_stage": 4}, "zero_stage must be 0-3"),
    ({"zero_stage": 0, "offload": True}, "offload needs ZeRO stage >= 1"),
    ({"zero_stage": 3, "ema_decay": 0.999}, "ema_decay needs ZeRO stage <= 2"),
    ({"grad_accum": 0}, "grad_accum must be >= 1"),
])
def test_bad_runtime_configs(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RuntimeConfig, data)


def test_deepspeed_config_follows_the_runtime():
    cfg = from_dict(RuntimeConfig, {"zero_stage": 3, "batch_size": 4, "grad_accum": 2, "lr": 1e-3, "warmup_steps": 10,
                                    "total_steps": 100, "grad_clip": 0.5, "offload": True})
    ds = deepspeed_config(cfg, world=2, device="cpu")
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (16, 2, 0.5)
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]  # fp32 on CPU
    sched = ds["scheduler"]["params"]
    assert ds["scheduler"]["type"] == "WarmupDecayLR" and sched["warmup_max_lr"] == 1e-3 and sched["total_num_steps"] == 100
    assert deepspeed_config(from_dict(RuntimeConfig, {"precision": "bf16"}), 1, "cpu")["bf16"]["enabled"]


def test_the_newest_checkpoint_step_is_found(tmp_path):
    assert checkpointed_step(tmp_path / "nothing") == 0
    for name, step in (("checkpoint_a", 200), ("checkpoint_b", 400)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "progress.json").write_text(json.dumps({"step": step}))
    assert checkpointed_step(tmp_path) == 400


def test_card_tags_are_strings_with_nested_parts_as_json():
    tags = _card_tags({"hop_length": 8, "config": {"width": 64}, "lineage": {"manifest_sha256": "ab"}})
    assert tags == {"hop_length": "8", "config": '{"width": 64}', "lineage": '{"manifest_sha256": "ab"}'}


def test_weight_ema_follows_the_weights_at_its_decay():
    import torch

    from pipeline.train.runtime import WeightEMA

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    ema.update(model)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 1 - 0.9 ** 2))
    assert ema.shadow["weight"].dtype == torch.float32 and set(ema.shadow) == {"weight", "bias"}
