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


def test_with_compile_the_forward_and_the_prior_s_loss_are_compiled_and_give_the_eager_loss(tmp_path):
    """--runtime.compile: the model's forward and a prior's loss each become a compiled graph; the
    loss through the DeepSpeed engine equals the eager model's (a process of its own: it starts a
    one-rank process group)."""
    import json
    import os
    import subprocess
    import sys

    from pipeline.services import free_port

    code = """
import dataclasses, json, types, torch
from models.prior import Prior
from models.prior_configs import TINY
from pipeline.config import from_dict
from pipeline.train.config import OptimConfig, RuntimeConfig
from pipeline.train.engine import build_engine
from pipeline.train.prior_task import _loss
cfg = dataclasses.replace(TINY["middle"], transformer=dataclasses.replace(TINY["middle"].transformer, width=32, depth=3, n_ctx=64,
                                                                           block_len=8))
torch.manual_seed(0)
eager = Prior(cfg)
state = {k: v.clone() for k, v in eager.state_dict().items()}
task = types.SimpleNamespace(build_model=lambda: Prior(cfg).requires_grad_(True))
spec = types.SimpleNamespace(task=task, runtime=from_dict(RuntimeConfig, {"compile": True}), optim=OptimConfig())
engine, _ = build_engine(spec, 1, "cpu")
engine.module.load_state_dict(state)
g = torch.Generator().manual_seed(1)
batch = {"codes": torch.randint(0, cfg.bins, (2, 64), generator=g), "artist": torch.zeros(2, dtype=torch.long),
         "genres": torch.zeros(2, 1, dtype=torch.long), "total_length": torch.full((2,), 441000),
         "offset": torch.zeros(2, dtype=torch.long),
         "upper_codes": torch.randint(0, 256, (2, 16), generator=g)}
compiled_loss = _loss(engine, batch)[0]
engine.backward(compiled_loss)
eager_loss = eager.loss(batch)[0]
print(json.dumps({"forward": engine.module._compiled_call_impl is not None,
                  "loss_from": hasattr(engine.module.loss_from, "_torchdynamo_orig_callable"),
                  "compiled": compiled_loss.item(), "eager": eager_loss.item()}))
"""
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu", "JUKEBOX_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["forward"] and out["loss_from"], out
    assert abs(out["compiled"] - out["eager"]) < 1e-4 * abs(out["eager"])
