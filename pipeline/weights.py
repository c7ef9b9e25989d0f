"""Model weights on disk: safetensors written in shards and read back, and weights-only loads.

- ``write_safetensors``: (name, tensor) pairs streamed into files of at most
  ``max_shard_bytes`` with an index, one tensor in memory at a time beside the shard being
  filled; non-finite weights are refused (nothing half-trained is written).
- ``load_state_dict``: a folder's weights back: safetensors (no pickle involved), or an
  older ``model.pt`` loaded with ``weights_only=True``.
- ``weights_only_loads``: every ``torch.load`` in its span, DeepSpeed's own included (they pass
  ``weights_only=False``), unpickles tensors, builtins and an allow-list of DeepSpeed's state
  classes only: a checkpoint file carrying code is refused, not run.
- ``check_against_model``: the written names and shapes are exactly a model's.

The registry reads weights through this module; the training runtime writes through it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
LEGACY_WEIGHTS = "model.pt"


class NonFiniteWeights(RuntimeError):
    pass


class MissingWeights(FileNotFoundError):
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


def write_safetensors(tensors: Iterable[tuple[str, torch.Tensor]], out: Path, max_shard_bytes: int = 2 * 2 ** 30) -> dict:
    """Write (name, tensor) pairs into ``out`` (one file, or shards with an index); returns the index."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    shard: dict[str, torch.Tensor] = {}
    weight_map: dict[str, int] = {}
    size = total = 0
    written: list[Path] = []
    shard_ptrs: set[int] = set()

    def close_shard() -> None:
        path = out / f"part-{len(written):05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        written.append(path)
        shard.clear()
        shard_ptrs.clear()

    for name, tensor in tensors:
        tensor = tensor.contiguous()
        if tensor.data_ptr() in shard_ptrs:  # a tied weight's second name: its own copy (one file cannot share memory)
            tensor = tensor.clone()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteWeights(f"{name} holds NaN or infinite values: nothing is registered")
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > max_shard_bytes:
            close_shard()
            size = 0
        shard[name] = tensor
        shard_ptrs.add(tensor.data_ptr())
        weight_map[name] = len(written)
        size += nbytes
        total += nbytes
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


def load_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The weights in ``folder``: safetensors (no pickle), or a legacy ``model.pt`` loaded weights-only."""
    folder = Path(folder)
    if (folder / SINGLE_FILE).exists() or (folder / INDEX_FILE).exists():
        return load_safetensors(folder)
    if (folder / LEGACY_WEIGHTS).exists():
        return torch.load(folder / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
    raise MissingWeights(f"no weights in {folder} (expected {SINGLE_FILE}, {INDEX_FILE} or {LEGACY_WEIGHTS})")


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
