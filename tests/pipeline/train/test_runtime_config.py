"""The runtime's config sections refuse what cannot work; the schedule is a function of the step."""

import pytest

from pipeline.config import ConfigError, from_dict
from pipeline.train.config import CheckpointConfig, OptimConfig, RuntimeConfig


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
    (CheckpointConfig, {"run_name": "../elsewhere"}, "letters, digits"),
    (CheckpointConfig, {"run_name": "mine' OR '1"}, "letters, digits"),
])
def test_bad_runtime_configs(cls, data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(cls, data)


def test_schedule_warms_up_then_decays_to_zero():
    linear = OptimConfig(lr=1.0, warmup_steps=4, decay="linear")
    factors = [linear.lr_factor(s, 20) for s in range(20)]
    assert factors[:4] == [0.2, 0.4, 0.6, 0.8] and factors[4] == 1.0
    assert factors[12] == 0.5 and all(a > b for a, b in zip(factors[4:], factors[5:])) and linear.lr_factor(20, 20) == 0.0
    cosine = OptimConfig(warmup_steps=0, decay="cosine")
    assert cosine.lr_factor(0, 10) == 1.0 and abs(cosine.lr_factor(5, 10) - 0.5) < 1e-9 and cosine.lr_factor(10, 10) < 1e-12
    assert OptimConfig(warmup_steps=2, decay="constant").lr_factor(50, 60) == 1.0
