"""What a sampling request will cost, refused before the first token when it cannot be paid.

``--duration 1e9`` is ~3 x 10^11 top-level tokens: without this the job would start, and fail
hours later on memory or disk. The duration is capped by what the priors were trained to
condition on (their timing range) unless ``--max_duration`` says otherwise; memory and disk
are estimated from the token counts and the WAVs, and compared with what the machine has.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ConfigError

CODE_BYTES = 8  # int64 while sampling
SAVED_CODE_BYTES = 2  # int16 on disk
WAV_BYTES = 2 * 2  # 16-bit stereo
DECODE_BYTES_PER_SAMPLE = 2 * 4 * 4  # float32 stereo, and the decoder's working copies around it


@dataclass(frozen=True)
class Budget:
    memory_bytes: int
    disk_bytes: int


def trained_duration(cards: list[dict]) -> float:
    """The longest song the priors' timing conditioning was built for (their ``max_duration_s``)."""
    spans = [float(c["config"]["max_duration_s"]) for c in cards if "max_duration_s" in c.get("config", {})]
    return min(spans) if spans else 600.0


def estimate(n_samples: int, tokens: dict[str, int], decode_levels: list[str], total_samples: int) -> Budget:
    codes = sum(tokens.values()) * n_samples
    waves = n_samples * total_samples * len(decode_levels)
    memory = codes * CODE_BYTES * 2 + n_samples * total_samples * DECODE_BYTES_PER_SAMPLE  # one level decoded at a time
    disk = codes * SAVED_CODE_BYTES * 2 + waves * WAV_BYTES + 200_000 * n_samples * len(decode_levels)  # + spectrograms
    return Budget(memory, disk)


def check(duration: float, max_duration: float, cards: list[dict], n_samples: int, tokens: dict[str, int],
          decode_levels: list[str], total_samples: int, out: Path) -> Budget:
    """Refuse (ConfigError) a duration past the cap, or a request the memory or the disk cannot hold."""
    import psutil

    cap = max_duration or trained_duration(cards)
    if duration > cap:
        raise ConfigError(f"--duration {duration:g} s is longer than {cap:g} s, "
                          + ("--max_duration" if max_duration else "the longest song the priors were trained to condition on")
                          + ": shorten it, or raise --max_duration knowingly")
    need = estimate(n_samples, tokens, decode_levels, total_samples)
    available = psutil.virtual_memory().available
    if need.memory_bytes > 0.8 * available:
        raise ConfigError(f"{n_samples} x {duration:g} s needs ~{need.memory_bytes / 2**30:.1f} GiB of memory "
                          f"({', '.join(f'{lv} {tokens[lv]:,} tokens' for lv in tokens)}); {available / 2**30:.1f} GiB "
                          "is available: sample fewer or shorter songs")
    folder = out
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if need.disk_bytes > free:
        raise ConfigError(f"{n_samples} x {duration:g} s writes ~{need.disk_bytes / 2**30:.1f} GiB; {folder} has "
                          f"{free / 2**30:.1f} GiB free")
    return need


__all__ = ["Budget", "check", "estimate", "trained_duration"]
