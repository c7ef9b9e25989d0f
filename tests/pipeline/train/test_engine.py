"""The DeepSpeed config follows ours; AdamW's groups decay weight matrices only."""

from pipeline.config import from_dict
from pipeline.train.config import OptimConfig, RuntimeConfig
from pipeline.train.engine import deepspeed_config, param_groups


def test_deepspeed_config_follows_the_runtime():
    cfg = from_dict(RuntimeConfig, {"zero_stage": 3, "batch_size": 4, "grad_accum": 2, "total_steps": 100, "offload": True})
    ds = deepspeed_config(cfg, from_dict(OptimConfig, {"grad_clip": 0.5}), world=2, device="cpu")
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (16, 2, 0.5)
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]  # fp32 on CPU
    assert "scheduler" not in ds  # the schedule is the runtime's own: a function of the step
    assert deepspeed_config(from_dict(RuntimeConfig, {"precision": "bf16"}), OptimConfig(), 1, "cpu")["bf16"]["enabled"]


def test_weight_decay_goes_to_weight_matrices_only():
    from toy_training import ToyModel

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

    embed, out = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
    out.weight = embed.weight  # an output layer sharing the token embedding (the upsamplers)
    model = torch.nn.Sequential(embed, torch.nn.Linear(4, 4), out)
    groups = param_groups(model, 0.01)
    assert sum(len(g["params"]) for g in groups) == 2 + 1  # the tied weight once, the middle layer's weight and bias
    assert groups[0]["params"] == [model[1].weight] and any(p is embed.weight for p in groups[1]["params"])
    torch.optim.AdamW(groups)  # no "parameters appear in more than one group"
