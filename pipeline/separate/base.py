"""The separators' interface: a whole song in, vocals and accompaniment out."""

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
