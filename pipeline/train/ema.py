"""The EMA of the weights, partitioned like ZeRO-3.

Each rank keeps only its 1/world slice of every parameter in fp32. Under ZeRO-3 that slice
is exactly the rank's partition (``param.ds_tensor``: DeepSpeed pads each flattened
parameter to a multiple of the world size and gives rank r the r-th equal piece); under
ZeRO 0-2 the same slice of the full parameter. So the EMA costs 4 bytes per parameter /
world on each rank at any stage. ``EMAReader`` assembles full parameters from a
checkpoint's slices, one at a time, for the export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

EMA_DIR = "ema"


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
