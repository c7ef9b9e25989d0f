"""The three levels of Jukebox's hierarchy: their names, hops, and which sits above which.

The one home of this vocabulary: every job, card check and sampler asks here. The hops are
the paper's (8, 32 and 128 samples per token at 44.1 kHz); an upsampler of a level is
conditioned on the level above it, ``ratio`` of its tokens to one upper token.
"""

from __future__ import annotations

LEVELS = ("bottom", "middle", "top")  # fine to coarse; a VQ-VAE config's ``level`` indexes this
SAMPLING_ORDER = ("top", "middle", "bottom")  # coarse to fine: the order levels are sampled in
HOPS = {"bottom": 8, "middle": 32, "top": 128}  # audio samples per token
UPPER = {"bottom": "middle", "middle": "top"}  # an upsampler's conditioning level

UNKNOWN = "unknown"  # artist and genre id 0: unseen, rare, or dropped for guidance
UNKNOWN_ID = 0


def check_level(level: str) -> str:
    if level not in HOPS:
        raise ValueError(f"unknown level {level!r}; the levels are {', '.join(LEVELS)}")
    return level


def hop(level: str) -> int:
    return HOPS[check_level(level)]


def upper(level: str) -> str:
    """The level an upsampler of ``level`` is conditioned on (the top level has none)."""
    if check_level(level) not in UPPER:
        raise ValueError("the top level has no upper level")
    return UPPER[level]


def ratio(level: str) -> int:
    """Tokens of ``level`` per token of the level above it (4 for the paper's middle and bottom)."""
    return HOPS[upper(level)] // HOPS[level]


def index(level: str) -> int:
    """0 bottom, 1 middle, 2 top: a VQ-VAE config's ``level``."""
    return LEVELS.index(check_level(level))


def tokens_for(samples: int, level: str) -> int:
    """Tokens of ``level`` that cover ``samples`` audio samples, as whole top-level tokens (so the levels line up)."""
    top = -(-samples // HOPS["top"])
    return top * HOPS["top"] // hop(level)
