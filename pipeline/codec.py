"""A VQ-VAE over whole songs: encode audio to codes and decode codes to audio in chunks with
context either side, so memory is bounded on long songs and chunk edges leave no seams (each
chunk sees what the convolutions would have seen in one pass; the context's output is dropped)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def encode_audio(model, read: Callable[[int, int], np.ndarray], num_samples: int, chunk_samples: int = 2 ** 19,
                 context_samples: int = 2 ** 15, device: torch.device | str = "cpu") -> np.ndarray:
    """Codes (num_samples // hop,) of mono audio that ``read(lo, hi)`` returns as (hi - lo, 1) float32."""
    hop = model.hop_length
    if chunk_samples % hop or context_samples % hop:
        raise ValueError(f"chunk ({chunk_samples}) and context ({context_samples}) samples must be multiples of the hop {hop}")
    tokens = num_samples // hop
    out = np.empty(tokens, dtype=np.int16)
    for start in range(0, tokens * hop, chunk_samples):
        lo, hi = max(0, start - context_samples), min(start + chunk_samples + context_samples, tokens * hop)
        with torch.inference_mode():
            codes = model.encode(torch.from_numpy(np.ascontiguousarray(read(lo, hi), dtype=np.float32))[None].to(device))[0]
        first, count = (start - lo) // hop, min(chunk_samples, tokens * hop - start) // hop
        out[start // hop:start // hop + count] = codes[first:first + count].cpu().numpy()
    return out


def decode_codes(model, codes: np.ndarray, chunk_tokens: int = 2 ** 14, context_tokens: int = 2 ** 11,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """Audio (batch, tokens * hop, channels) float32 of codes (batch, tokens)."""
    hop = model.hop_length
    batch, tokens = codes.shape
    out = np.empty((batch, tokens * hop, model.cfg.channels), dtype=np.float32)
    for start in range(0, tokens, chunk_tokens):
        lo, hi = max(0, start - context_tokens), min(start + chunk_tokens + context_tokens, tokens)
        with torch.inference_mode():
            audio = model.decode(torch.from_numpy(codes[:, lo:hi].astype(np.int64)).to(device)).float().cpu().numpy()
        count = min(chunk_tokens, tokens - start)
        out[:, start * hop:(start + count) * hop] = audio[:, (start - lo) * hop:(start - lo + count) * hop]
    return out
