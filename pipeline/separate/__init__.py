"""Vocal extraction: one interface, several back ends.

A ``Separator`` takes a whole song (44.1 kHz stereo float32) and returns vocals and
accompaniment of the same shape. It is built once per Ray actor (``load``), then called
per song. ``dsp`` needs no weights and always works; Spleeter plugs in here (its own
issue) behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class Stems:
    vocals: np.ndarray  # (n, 2) float32
    accompaniment: np.ndarray  # (n, 2) float32


class Separator(ABC):
    name: str = "separator"
    version: str = "0"

    def load(self) -> None:
        """Load weights or build graphs: called once per actor before any song."""

    @abstractmethod
    def separate(self, samples: np.ndarray, sample_rate: int) -> Stems: ...


def build_separator(name: str, **options) -> Separator:
    if name == "dsp":
        from pipeline.separate.dsp import CentreHarmonicSeparator

        return CentreHarmonicSeparator(**options)
    if name == "spleeter":
        from pipeline.separate.spleeter import SpleeterSeparator

        return SpleeterSeparator(**options)
    raise ValueError(f"unknown separator {name!r}; available: ['dsp', 'spleeter']")
