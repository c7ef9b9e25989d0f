"""``jobs/train_prior.py``: the top prior or an upsampler, from registered VQ-VAEs to a registered prior.

In the driver, before Ray starts a worker: the VQ-VAE(s) are resolved in the registry (a
missing model or alias stops the job) and their cards checked against this prior's config
(level, hop length, codebook size, sample rate), the vocabulary against its artist and
genre tables, and the model against the memory it would train in. Then the code cache is
reused or built (``pipeline.data.encode``), the prior trains on the shared runtime, and
``jukebox-prior-<level>`` is registered with its lineage.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models import levels
from models.prior import Prior, PriorConfig
from models.prior_configs import PAPER, TINY
from pipeline.audio import TARGET_SAMPLE_RATE
from pipeline.config import ConfigError, field
from pipeline.train.config import OptimConfig
from pipeline.train.job import TrainJobConfig, check_fits, launch, print_summary


@dataclass
class PriorOverrides:
    """Changes to the preset's model (unset = the preset's value)."""

    width: int | None = field(None, "transformer width", ge=1)
    depth: int | None = field(None, "transformer layers", ge=1)
    heads: int | None = field(None, "attention heads", ge=1)
    n_ctx: int | None = field(None, "context in tokens (the paper: 8192)", ge=1)
    block_len: int | None = field(None, "block length of the factorized attention (the paper: 64)", ge=1)
    n_artists: int | None = field(None, "rows of the artist table (>= the vocabulary's artists)")
    n_genres: int | None = field(None, "rows of the genre-word table (>= the vocabulary's genre words)")
    cond_dropout: float | None = field(None, "probability of training an example with unknown artist/genre (for guidance)", le=1)
    emb_dropout: float | None = field(None, "dropout on the input embeddings (0 in the paper; a few songs overfit without it)", lt=1)
    resid_dropout: float | None = field(None, "dropout on every attention and MLP output (0 in the paper)", lt=1)
    checkpoint_activations: bool | None = field(None, "recompute each layer in backward (on in the paper presets)")
    conditioner: bool | None = field(None, "upsamplers: false trains without the upper level's codes (a baseline)")
    timing: bool | None = field(None, "top prior: the timing embeddings (total length, time, fraction elapsed); false drops them")


def _prior_optim() -> OptimConfig:
    return OptimConfig(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.01, warmup_steps=100)


@dataclass
class TrainPriorConfig(TrainJobConfig):
    level: Literal["top", "middle", "bottom"] = field("top", "top prior, or the middle / bottom upsampler")
    holdout: float = field(0.1, "last fraction of every song kept out of training; the held-out loss comes from it", lt=1)
    optim: OptimConfig = dataclasses.field(default_factory=_prior_optim)
    experiment: str = field("jukebox-prior", "MLflow experiment")
    lyrics: bool = field(True, "top prior: condition on lyrics (encoder-decoder layers and the lyrics loss)")
    model: PriorOverrides = dataclasses.field(default_factory=PriorOverrides)
    vqvae: str = field("", "this level's VQ-VAE (default models:/jukebox-vqvae-<level>@current)")
    upper_vqvae: str = field("", "upsamplers: the upper level's VQ-VAE (default models:/jukebox-vqvae-<upper>@current)")
    codes_dir: str = field("", "where code caches live (default <shards>/codes); one folder per VQ-VAE version")
    encode_actors: int = field(1, "actors encoding the corpus when a code cache is built", ge=1)
    encode_gpus: float = field(0.0, "GPUs per encoding actor (0: CPU)")
    encode_pitch_shifts: tuple[float, ...] = field((), "augmentation for a small corpus: each song also trained on pitch-shifted "
                                                   "by these semitones (e.g. --encode_pitch_shifts=-2,-1,1,2; its own code cache)")

    def model_config(self) -> PriorConfig:
        preset = PAPER if self.preset == "paper" else TINY
        key = "top_lyrics" if self.level == "top" and self.lyrics and self.preset == "paper" else self.level
        base = dataclasses.replace(preset[key])
        if self.level == "top" and not self.lyrics:
            base = dataclasses.replace(base, lyrics=None, transformer=dataclasses.replace(base.transformer, cross_layers=()))
        o = self.model
        tr = {k: v for k, v in dict(width=o.width, depth=o.depth, heads=o.heads, n_ctx=o.n_ctx, block_len=o.block_len,
                                    checkpoint_activations=o.checkpoint_activations,
                                    resid_dropout=o.resid_dropout).items() if v is not None}
        transformer = dataclasses.replace(base.transformer, **tr)
        if base.lyrics is not None and transformer.depth != base.transformer.depth:  # cross layers: the same places from the end
            transformer.cross_layers = tuple(i - base.transformer.depth + transformer.depth for i in base.transformer.cross_layers
                                             if i - base.transformer.depth + transformer.depth >= 0) or (transformer.depth - 1,)
        top = {k: v for k, v in dict(n_artists=o.n_artists, n_genres=o.n_genres, cond_dropout=o.cond_dropout,
                                emb_dropout=o.emb_dropout).items() if v is not None}
        if o.conditioner is False:
            top["upsampler"] = None
        if o.timing is not None:
            top["timing"] = o.timing
        return dataclasses.replace(base, transformer=transformer, **top)

    def vqvae_uri(self) -> str:
        return self.vqvae or f"models:/jukebox-vqvae-{self.level}@current"

    def upper_vqvae_uri(self) -> str:
        return self.upper_vqvae or f"models:/jukebox-vqvae-{levels.upper(self.level)}@current"

    def validate(self) -> None:
        try:
            self.model_config().validate()
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        shifts = self.encode_pitch_shifts
        if any(not -12 <= s <= 12 or s == 0 for s in shifts) or len(set(shifts)) < len(shifts):
            raise ConfigError(f"encode_pitch_shifts must be distinct non-zero semitones within +-12, got {list(shifts)}")
        if self.model.cond_dropout is not None and not 0.0 <= self.model.cond_dropout <= 1.0:
            raise ConfigError(f"model.cond_dropout must be in [0, 1], got {self.model.cond_dropout}")
        super().validate()


def check_upstream(cfg: TrainPriorConfig, model: PriorConfig, tracking: str) -> dict:
    """Resolve the VQ-VAE(s) and check their cards and the vocabulary against the prior: before any worker."""
    from pipeline.data.vocab import latest_vocab
    from pipeline.registry import check_card, download

    hop = levels.hop(cfg.level)
    needs = {"family": "vqvae", "level": cfg.level, "hop_length": hop, "codebook_size": model.bins, "sample_rate": TARGET_SAMPLE_RATE}
    if model.hop_length != hop:
        raise ConfigError(f"the {cfg.level} prior's hop is {model.hop_length}; the {cfg.level} level's is {hop}")
    found = {"vqvae": download(cfg.vqvae_uri(), tracking_uri=tracking)}
    check_card(found["vqvae"].card, needs, f"{cfg.vqvae_uri()} (version {found['vqvae'].version})")
    if model.upsampler is not None:
        upper = levels.upper(cfg.level)
        found["upper_vqvae"] = download(cfg.upper_vqvae_uri(), tracking_uri=tracking)
        check_card(found["upper_vqvae"].card, {"family": "vqvae", "level": upper, "hop_length": levels.hop(upper),
                                               "codebook_size": model.upsampler.upper_bins, "sample_rate": TARGET_SAMPLE_RATE},
                   f"{cfg.upper_vqvae_uri()} (version {found['upper_vqvae'].version})")
    version, vocab = latest_vocab(Path(cfg.shards).expanduser() / "vocab")
    if vocab is not None:
        for table, rows, flag in (("artists", model.n_artists, "n_artists"), ("genres", model.n_genres, "n_genres")):
            if len(vocab[table]) > rows:
                raise ConfigError(f"vocabulary v{version} has {len(vocab[table])} {table}; the prior's table has {rows} rows "
                                  f"(--model.{flag} {len(vocab[table])} or more)")
    found["vocab_version"] = version
    # the names a sampler conditions by travel with the model (its card.json), not with the shards
    found["vocab"] = {"artists": vocab["artists"], "genres": vocab["genres"]} if vocab is not None else None
    return found


def check_windows(source_args: dict, holdout: float) -> None:
    """Training (and held-out) windows exist in the code cache: refused in the driver, not in a worker."""
    from pipeline.train.sources import PriorWindows

    spans = {"training": ((0.0, 1.0 - holdout), True)}
    if holdout:
        spans["held-out"] = ((1.0 - holdout, 1.0), False)
    for what, (span, variants) in spans.items():
        try:
            PriorWindows(**source_args, span=span, variants=variants).open()
        except ValueError as exc:
            raise ConfigError(f"{what} windows: {exc} (a shorter --model.n_ctx, longer songs"
                              + (", or another --holdout)" if holdout else ")")) from None


def train_prior(cfg: TrainPriorConfig) -> dict:
    from pipeline.data.encode import EncodeSettings, get_or_build
    from pipeline.train.prior_task import PriorTask

    job_started = time.time()
    cfg.validate()
    cfg.check_shards()
    model = cfg.model_config()
    check_fits(cfg, lambda: Prior(model), f"the {cfg.preset} {cfg.level} prior")
    tracking = cfg.tracking(f"jukebox-prior-{cfg.level}")
    upstream = check_upstream(cfg, model, tracking.uri)
    shards = cfg.shards_path()
    cfg.start_ray()
    settings = EncodeSettings(actors=cfg.encode_actors, gpus=cfg.encode_gpus, pitch_shifts=tuple(cfg.encode_pitch_shifts))
    folder, cache_facts = get_or_build(shards, upstream["vqvae"], tracking.uri, settings, cfg.codes_dir)
    source_args = {"cache": str(folder), "n_ctx": model.n_ctx, "seed": cfg.data_seed}
    lineage = {"vqvae": upstream["vqvae"].uri, "code_cache": cache_facts["code_cache"],
               "vocab_version": upstream["vocab_version"], "shards": str(shards)}
    if settings.pitch_shifts:
        lineage["pitch_shifts"] = list(settings.pitch_shifts)
    facts = {"code_cache": cache_facts}
    if model.upsampler is not None:
        upper_folder, upper_facts = get_or_build(shards, upstream["upper_vqvae"], tracking.uri, settings, cfg.codes_dir)
        source_args.update(upper_cache=str(upper_folder), ratio=levels.ratio(cfg.level))
        lineage.update(upper_vqvae=upstream["upper_vqvae"].uri, upper_code_cache=upper_facts["code_cache"])
        facts["upper_code_cache"] = upper_facts
    if model.lyrics is not None:
        source_args.update(shards=str(shards), n_chars=model.lyrics.encoder.n_ctx)
    check_windows(source_args, cfg.holdout)
    card_extra = {"vocab_version": upstream["vocab_version"], "vqvae": lineage["vqvae"], "upper_vqvae": lineage.get("upper_vqvae", ""),
                  "vocab": upstream["vocab"]}
    task = PriorTask(model, source_args, cfg.holdout, card_extra=card_extra, lineage=lineage)
    summary = launch(cfg, task, tracking, job_started)
    summary.update(lineage=lineage, **facts)
    return summary


main_summary = print_summary(train_prior)
