"""A Ray Train checkpoint's weights out as safetensors, without ever holding two full copies.

The fp32 weights of the DeepSpeed state (any ZeRO stage; DeepSpeed's lazy reader maps the
optimizer files instead of loading them), with the EMA replacing the trained weights when
the run kept one, streamed one tensor at a time into ``pipeline.weights.write_safetensors``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import torch

from pipeline.train.ema import EMA_DIR, EMAReader
from pipeline.weights import weights_only_loads, write_safetensors


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """DeepSpeed's checkpoint reader draws a tqdm bar per file it reads: made with ``disable=True`` in this span."""
    import functools

    from deepspeed.utils import zero_to_fp32

    before = zero_to_fp32.tqdm
    zero_to_fp32.tqdm = functools.partial(before, disable=True)
    try:
        yield
    finally:
        zero_to_fp32.tqdm = before


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

    # its reader asks for weights_only=False, prints three progress lines (print, not a log) and draws a
    # progress bar per checkpoint: a job's console says when the export ends, not each file it reads
    with weights_only_loads(), contextlib.redirect_stdout(io.StringIO()), _no_progress_bars():
        lazy = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag="state", lazy_mode=True)
    for name in list(lazy):
        yield name, lazy.pop(name).contiguous()


def export_safetensors(folder: Path, out: Path, max_shard_bytes: int = 2 * 2 ** 30) -> dict:
    """Stream a checkpoint's weights (EMA first when the run kept one) into ``out``; returns the index."""
    ema = EMAReader(folder) if (Path(folder) / EMA_DIR / "meta.json").exists() else None
    pending = ema.names() if ema else set()

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in checkpoint_tensors(folder):
            if name in pending:
                pending.discard(name)
                tensor = ema.get(name)
            yield name, tensor
        if pending:
            raise RuntimeError(f"EMA holds parameters the checkpoint does not: {sorted(pending)[:5]}")

    return write_safetensors(tensors(), out, max_shard_bytes)
