"""The paper's training cost, on paper: counted FLOPs agree with the 6 x parameters x tokens rule,
and the figures derived from them are consistent."""

from __future__ import annotations

import pytest

from pipeline.train import cost


@pytest.fixture(scope="module")
def upsampler():
    stage = next(s for s in cost.STAGES if s.name == "prior.middle")
    return stage, cost.measure(stage)


def test_a_transformer_s_counted_flops_follow_six_n_t(upsampler):
    stage, (flops, params) = upsampler
    assert params == 981_302_016  # built on fake tensors: the paper's 0.98 B, nothing allocated
    rule = 6 * params * 8192  # forward + backward of one 8,192-token example
    assert 0.95 * rule < flops < 1.25 * rule  # attention and the conditioner on top of the rule


def test_time_memory_and_the_paper_s_report_follow_from_the_counted_flops(upsampler):
    stage, (flops, params) = upsampler
    on_a100 = cost.cost(stage, flops, "A100", 0.5, 128)
    assert on_a100["total_flops"] == pytest.approx(flops * stage.batch * stage.steps * cost.RECOMPUTE)
    assert on_a100["days"] == pytest.approx(on_a100["device_hours"] / 128 / 24)
    assert cost.cost(stage, flops, "H100", 0.5, 128)["device_hours"] < on_a100["device_hours"]
    memory = cost.memory_per_device(params, 8)
    assert memory["zero0"] == pytest.approx(params * 16 / 2**30)  # bf16 weights and gradients, fp32 Adam and master
    assert memory["zero3"] == pytest.approx(memory["zero0"] / 8) and memory["zero3+offload"] < memory["zero3"]
    st = cost.storage(1_200_000, 240.0)
    assert st["audio_hours"] == 80_000 and st["shards_tb"] > st["code_caches_tb"] > 0


def test_the_job_refuses_an_unknown_accelerator():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="unknown accelerators"):
        cost.project_cost(cost.ProjectCostConfig(accelerators="TPU9"))
