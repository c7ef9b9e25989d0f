"""The registered models a sampling run needs, resolved and checked to fit together before any
sampling: levels, hops, codebook sizes, sample rates, the VQ-VAE each prior was trained on, and
one vocabulary. Conditioning names are turned into ids here, and an unknown name is refused with
the closest names the vocabulary has."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from models import levels
from models.levels import UNKNOWN, UNKNOWN_ID, UPPER
from pipeline.config import ConfigError
from pipeline.registry import RegisteredModel, RegistryError, download, instantiate


@dataclass
class ModelSet:
    priors: dict[str, RegisteredModel]  # by level
    vqvaes: dict[str, RegisteredModel]
    sample_rate: int
    vocab: dict[str, dict[str, int]] | None

    def sampled_levels(self) -> list[str]:
        """The sampled levels, top first."""
        return [lv for lv in levels.SAMPLING_ORDER if lv in self.vqvaes]

    def load_vqvae(self, level: str, device: str = "cpu"):
        """The level's VQ-VAE in eval mode on ``device`` (from its downloaded folder)."""
        return instantiate(self.vqvaes[level], device)

    def load_prior(self, level: str, device: str = "cpu"):
        """The level's prior in eval mode on ``device``."""
        return instantiate(self.priors[level], device)

    def versions(self) -> dict[str, str]:
        """{"prior.top": "models:/jukebox-prior-top/3", ...}: what an MLflow run and the page name."""
        return {**{f"prior.{k}": v.uri for k, v in self.priors.items()}, **{f"vqvae.{k}": v.uri for k, v in self.vqvaes.items()}}


def _differs(what: str, field: str, got: Any, want: Any) -> None:
    if str(got) != str(want):
        raise RegistryError(f"incompatible models: {what} has {field} = {got!r}, expected {want!r}")


def resolve_models(models, sampled: list[str], tracking: str | None = None, with_top_prior: bool = True) -> ModelSet:
    """Download (once) and check the set of ``sampled`` levels; nothing is built or loaded yet.

    ``models`` is a ``ModelsConfig`` (URIs by level); ``with_top_prior=False`` for upsampling given top codes."""
    priors: dict[str, RegisteredModel] = {}
    for level in sampled:
        if level == "top" and not with_top_prior:
            continue  # upsample-only: the top codes are given
        priors[level] = download(models.prior(level), tracking_uri=tracking)
    vqvaes: dict[str, RegisteredModel] = {}
    for level in sampled:
        given = models.vqvae(level)
        trained_on = priors[level].card.get("vqvae", "") if level in priors else ""
        if level == "top" and not trained_on and "middle" in priors:
            trained_on = priors["middle"].card.get("upper_vqvae", "")
        uri = given or trained_on or f"models:/jukebox-vqvae-{level}@current"
        vqvaes[level] = download(uri, tracking_uri=tracking)
    check_models(priors, vqvaes)
    rates = {v.card.get("sample_rate") for v in vqvaes.values()}
    vocab = next((p.card["vocab"] for p in priors.values() if p.card.get("vocab")), None)
    return ModelSet(priors, vqvaes, int(rates.pop()), vocab)


def check_models(priors: dict[str, RegisteredModel], vqvaes: dict[str, RegisteredModel]) -> None:
    """A ``RegistryError`` naming the first thing that does not fit."""
    rates = {}
    for level, vq in vqvaes.items():
        what = f"the {level} VQ-VAE {vq.uri}"
        _differs(what, "family", vq.card.get("family"), "vqvae")
        _differs(what, "level", vq.card.get("level"), level)
        _differs(what, "hop_length", vq.card.get("hop_length"), levels.hop(level))
        rates[vq.uri] = vq.card.get("sample_rate")
    if len(set(map(str, rates.values()))) > 1:
        raise RegistryError(f"incompatible models: the VQ-VAEs' sample rates differ: {rates}")
    vocab_versions = {}
    for level, prior in priors.items():
        what, card, vq = f"the {level} prior {prior.uri}", prior.card, vqvaes[level]
        _differs(what, "family", card.get("family"), "prior")
        _differs(what, "level", card.get("level"), level)
        _differs(what, "hop_length", card.get("hop_length"), vq.card.get("hop_length"))
        _differs(what, "bins", card.get("bins"), vq.card.get("codebook_size"))
        _differs(what, "sample_rate", card.get("sample_rate"), vq.card.get("sample_rate"))
        if card.get("vqvae") and card["vqvae"] != vq.uri:
            raise RegistryError(f"incompatible models: {what} was trained on the codes of {card['vqvae']}, "
                                f"not of {vq.uri} (another VQ-VAE's codes mean other sounds)")
        if level in UPPER:
            upsampler = card["config"].get("upsampler")
            if not upsampler:
                raise RegistryError(f"incompatible models: {what} has no upsampler conditioner (trained with --model.conditioner false)")
            upper = vqvaes[UPPER[level]]
            _differs(what, "upsampler upper_bins", upsampler["upper_bins"], upper.card.get("codebook_size"))
            _differs(what, "upsampling ratio", 2 ** upsampler["stages"], levels.ratio(level))
            if card.get("upper_vqvae") and card["upper_vqvae"] != upper.uri:
                raise RegistryError(f"incompatible models: {what} was conditioned on the codes of {card['upper_vqvae']}, "
                                    f"not of {upper.uri}")
        vocab_versions[level] = card.get("vocab_version")
    if len(set(map(str, vocab_versions.values()))) > 1:
        raise RegistryError(f"incompatible models: the priors use different vocabulary versions {vocab_versions}")


def _lookup(table: dict[str, int], name: str, what: str) -> int:
    from pipeline.data.vocab import key

    k = key(name)
    if k in table:
        return table[k]
    close = difflib.get_close_matches(k, list(table), n=5, cutoff=0.5)
    raise ConfigError(f"unknown {what} {name!r}" + (f"; the closest known: {', '.join(close)}" if close else
                                                   f"; the vocabulary has {len(table)} {what}s"))


def condition_ids(vocab: dict[str, dict[str, int]] | None, artist: str, genres: list[str], n_artists: int,
                  n_genres: int) -> tuple[int, list[int]]:
    """(artist id, genre ids) of names; "unknown" is id 0 whatever the vocabulary."""
    from pipeline.data.vocab import key

    wanted = [artist, *genres]
    if vocab is None:
        if any(key(n) != UNKNOWN for n in wanted):
            raise ConfigError("the priors' cards carry no vocabulary (registered before names travelled with them): "
                              "only --artist unknown --genre unknown can be sampled")
        return UNKNOWN_ID, [UNKNOWN_ID]
    a = UNKNOWN_ID if key(artist) == UNKNOWN else _lookup(vocab["artists"], artist, "artist")
    g = [UNKNOWN_ID if key(x) == UNKNOWN else _lookup(vocab["genres"], x, "genre") for x in genres]
    if a >= n_artists or max(g) >= n_genres:
        raise ConfigError(f"artist id {a} / genre ids {g} are outside the prior's tables ({n_artists}, {n_genres})")
    return a, g
