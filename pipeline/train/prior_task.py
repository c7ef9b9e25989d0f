"""A prior as a training job: windows of the code cache (its data source), the prior's loss,
held-out evaluation, the lyrics attention image and the card (its task)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.levels import LEVELS
from models.prior import Prior, PriorConfig
from pipeline.train.protocol import TrainingTask
from pipeline.train.sources import PriorWindows

EVAL_STREAM = 2 ** 32 - 3


@dataclass
class PriorTask(TrainingTask):
    model: PriorConfig
    source_args: dict[str, Any]  # PriorWindows' fields for training (span = the training part)
    holdout: float = 0.0
    eval_windows: int = 4
    card_extra: dict[str, Any] = field(default_factory=dict)  # what the job checked: vqvae versions, vocabulary
    lineage: dict[str, Any] = field(default_factory=dict)
    name = "prior"

    def source(self) -> PriorWindows:
        return PriorWindows(**self.source_args, span=(0.0, 1.0 - self.holdout))

    def setup(self, device: torch.device) -> None:
        self.eval_source = None
        if self.holdout:
            self.eval_source = PriorWindows(**{**self.source_args, "span": (1.0 - self.holdout, 1.0), "variants": False})
            self.eval_source.open()

    def build_model(self) -> torch.nn.Module:
        return Prior(self.model)

    def run_step(self, model, batch, log):
        return _loss(model, batch)

    def media(self, model, folder: Path | None) -> dict[str, float]:
        """Held-out bits per token on fixed windows; for a lyrics prior, one encoder-decoder head's attention as an image."""
        if self.eval_source is None:
            return {}
        specs = self.eval_source.windows([self.eval_source.seed, EVAL_STREAM], self.eval_windows)
        device = next(model.parameters()).device
        batch = {k: torch.from_numpy(v).to(device) for k, v in self.eval_source.batch(specs).items()}
        _, metrics = _loss(model, batch)
        out = {f"heldout_{k}": float(v) for k, v in metrics.items()}
        if self.model.lyrics is not None:  # every rank: forward passes under ZeRO-3 are collective
            weights = getattr(model, "module", model).lyrics_attention(batch)[0]
            if folder is not None:
                write_attention_image(weights, folder)
        return out

    def card(self) -> dict[str, Any]:
        return {"family": "prior", "level": LEVELS[self.model.level], "bins": self.model.bins,
                "hop_length": self.model.hop_length, "sample_rate": self.model.sample_rate, "n_ctx": self.model.n_ctx,
                "lyrics": self.model.lyrics is not None, "config": dataclasses.asdict(self.model), "holdout": self.holdout,
                **self.card_extra, "lineage": self.lineage}

    def params(self) -> dict[str, Any]:
        from pipeline.config import flatten

        return {**{f"model.{k}": v for k, v in flatten(self.model).items()}, "holdout": self.holdout,
                **{f"data.{k}": v for k, v in self.source_args.items()}}


def _loss(model, batch):
    """The prior's loss through whatever wraps it: a DeepSpeed engine's forward is the module's."""
    return getattr(model, "module", model).loss_from(model(batch), batch)


def write_attention_image(weights: torch.Tensor, folder: Path) -> None:
    """Where one encoder-decoder head looks in the lyrics (music tokens x characters of one window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.imshow(weights.float().cpu().numpy().T, origin="lower", aspect="auto", cmap="magma")
    ax.set_xlabel("music token")
    ax.set_ylabel("lyrics character")
    ax.set_title("encoder-decoder attention (last cross layer, head 0)")
    fig.tight_layout()
    fig.savefig(folder / "lyrics_attention.png", dpi=80)
    plt.close(fig)
    np.save(folder / "lyrics_attention.npy", weights.float().cpu().numpy())

