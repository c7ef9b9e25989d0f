"""Weights in and out of the training runtime without ever holding two full copies.

- ``PartitionedEMA``: the fp32 EMA of the weights, each rank keeping only its 1/world slice
  of every parameter. Under ZeRO-3 that slice is exactly the rank's partition
  (``param.ds_tensor``: DeepSpeed pads each flattened parameter to a multiple of the world
  size and gives rank r the r-th equal piece); under ZeRO 0-2 the same slice of the full
  parameter. So the EMA costs 4 bytes per parameter / world on each rank at any stage.
- ``export_safetensors``: the fp32 weights of a Ray Train checkpoint (any ZeRO stage, with
  the EMA replacing the trained weights when there is one) streamed into safetensors files
  of at most ``max_shard_bytes`` with an index, one tensor in memory at a time beside the
  shard being filled. DeepSpeed's lazy reader maps the optimizer files instead of loading them.
- ``load_safetensors``: the state dict back, no pickle involved.
- ``weights_only_loads``: every ``torch.load`` in its span, DeepSpeed's own included (they pass
  ``weights_only=False``), unpickles tensors, builtins and an allow-list of DeepSpeed's state
  classes only: a checkpoint file carrying code is refused, not run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

EMA_DIR = "ema"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class NonFiniteWeights(RuntimeError):
    pass


def deepspeed_state_classes() -> list[type]:
    """What a DeepSpeed checkpoint holds besides tensors and builtins: measured with
    ``torch.serialization.get_unsafe_globals_in_checkpoint`` on ZeRO 0-3 checkpoints of our runs
    (the dynamic loss scaler is the fp16 one)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """``torch.load`` refuses pickled code in this span, whatever its caller asks for."""
    import torch.serialization

    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # read by torch.load on every call
    try:
        with torch.serialization.safe_globals(deepspeed_state_classes()):
            yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def _local_slice(param: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's piece of a parameter, flat: its ZeRO-3 partition, or the same piece of the full tensor."""
    if hasattr(param, "ds_tensor"):
        return param.ds_tensor.data.view(-1)
    size = math.ceil(param.numel() / world)
    return param.data.view(-1)[rank * size:(rank + 1) * size]


class PartitionedEMA:
    def __init__(self, module: torch.nn.Module, decay: float, rank: int, world: int):
        self.decay, self.rank, self.world = decay, rank, world
        self.params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        self.shadow = {n: _local_slice(p, rank, world).detach().float().clone() for n, p in self.params.items()}
        self.shapes = {n: list(getattr(p, "ds_shape", p.shape)) for n, p in self.params.items()}
        canonical = {id(p): n for n, p in self.params.items()}  # a tied weight's other names read its EMA
        self.aliases = {n: canonical[id(p)] for n, p in module.named_parameters(remove_duplicate=False)
                        if id(p) in canonical and canonical[id(p)] != n}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params.items():
            self.shadow[n].lerp_(_local_slice(p, self.rank, self.world).float(), 1 - self.decay)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        (folder / EMA_DIR).mkdir(parents=True, exist_ok=True)
        # a slice of a shared storage cannot be saved as is: contiguous copies (a few MB at a time)
        save_file({n: t.contiguous() for n, t in self.shadow.items()}, str(folder / EMA_DIR / f"rank{self.rank}.safetensors"))
        if self.rank == 0:
            (folder / EMA_DIR / "meta.json").write_text(json.dumps({"world": self.world, "shapes": self.shapes,
                                                                    "aliases": self.aliases}))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        saved = load_file(str(folder / EMA_DIR / f"rank{self.rank}.safetensors"))
        if set(saved) != set(self.shadow):
            raise RuntimeError(f"EMA in {folder} does not match the model's parameters")
        self.shadow = saved


class EMAReader:
    """Full fp32 EMA parameters of a checkpoint, assembled from every rank's slice one at a time."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        meta = json.loads((Path(folder) / EMA_DIR / "meta.json").read_text())
        self.shapes, self.aliases = meta["shapes"], meta.get("aliases", {})
        self.files = [safe_open(str(Path(folder) / EMA_DIR / f"rank{r}.safetensors"), "pt") for r in range(meta["world"])]

    def names(self) -> set[str]:
        return set(self.shapes) | set(self.aliases)

    def get(self, name: str) -> torch.Tensor:
        name = self.aliases.get(name, name)
        shape = self.shapes[name]
        return torch.cat([f.get_tensor(name) for f in self.files])[:math.prod(shape)].view(shape)


def checkpoint_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """fp32 weights and buffers of a checkpoint's DeepSpeed state (tag ``state``), one at a time."""
    state = Path(folder) / "state"
    if not list(state.glob("*optim_states.pt")):  # ZeRO-0: rank 0 saved the whole module
        with weights_only_loads():
            saved = torch.load(state / "mp_rank_00_model_states.pt", map_location="cpu", mmap=True, weights_only=True)
        for name, tensor in saved["module"].items():
            yield name, tensor.float() if tensor.is_floating_point() else tensor
        return
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with weights_only_loads():  # its reader asks for weights_only=False
        lazy = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag="state", lazy_mode=True)
    for name in list(lazy):
        yield name, lazy.pop(name).contiguous()


def export_safetensors(folder: Path, out: Path, max_shard_bytes: int = 2 * 2 ** 30) -> dict:
    """Stream a checkpoint's weights (EMA first when the run kept one) into ``out``; returns the index."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    ema = EMAReader(folder) if (Path(folder) / EMA_DIR / "meta.json").exists() else None
    pending_ema = ema.names() if ema else set()
    shards: list[dict[str, torch.Tensor]] = [{}]
    weight_map: dict[str, int] = {}
    size = total = 0
    written: list[Path] = []
    shard_ptrs: set[int] = set()

    def close_shard() -> None:
        path = out / f"part-{len(written):05d}.safetensors"
        save_file(shards[0], str(path), metadata={"format": "pt"})
        written.append(path)
        shards[0] = {}
        shard_ptrs.clear()

    for name, tensor in checkpoint_tensors(folder):
        if name in pending_ema:
            tensor = ema.get(name)
            pending_ema.discard(name)
        tensor = tensor.contiguous()
        if tensor.data_ptr() in shard_ptrs:  # a tied weight's second name: its own copy (one file cannot share memory)
            tensor = tensor.clone()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteWeights(f"{name} holds NaN or infinite values: nothing is registered")
        nbytes = tensor.numel() * tensor.element_size()
        if shards[0] and size + nbytes > max_shard_bytes:
            close_shard()
            size = 0
        shards[0][name] = tensor
        shard_ptrs.add(tensor.data_ptr())
        weight_map[name] = len(written)
        size += nbytes
        total += nbytes
    if pending_ema:
        raise RuntimeError(f"EMA holds parameters the checkpoint does not: {sorted(pending_ema)[:5]}")
    close_shard()
    if len(written) == 1:  # one file: the plain name, no index needed
        written[0].rename(out / SINGLE_FILE)
        names = {0: SINGLE_FILE}
    else:
        names = {i: f"model-{i + 1:05d}-of-{len(written):05d}.safetensors" for i in range(len(written))}
        for i, path in enumerate(written):
            path.rename(out / names[i])
    index = {"metadata": {"total_size": total}, "weight_map": {k: names[v] for k, v in weight_map.items()}}
    if len(written) > 1:
        (out / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True))
    return index


def load_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``export_safetensors``'s output (one file or shards with an index)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / INDEX_FILE).exists():
        files = sorted(set(json.loads((folder / INDEX_FILE).read_text())["weight_map"].values()))
    else:
        files = [SINGLE_FILE]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    return state


def check_against_model(index: dict, model_on_meta: torch.nn.Module, folder: Path) -> None:
    """The exported names and shapes are exactly the model's (checked on the meta device: no weights held)."""
    from safetensors import safe_open

    expected = {k: list(v.shape) for k, v in model_on_meta.state_dict().items()}
    got: dict[str, list[int]] = {}
    for file in sorted(set(index["weight_map"].values())):
        with safe_open(str(folder / file), "pt") as f:
            for name in f.keys():
                got[name] = list(f.get_slice(name).get_shape())
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise RuntimeError(f"exported weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}, "
                           f"shapes differ {shapes[:5]}")
