"""The Sampler's plan, without a model loaded: tokens per level, segments, and names to ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.registry import RegisteredModel
from pipeline.sample import Sampler
from pipeline.sample.models import ModelSet

VOCAB = {"artists": {"unknown": 0, "ada lovelace": 1}, "genres": {"unknown": 0, "rock": 1}}


def _reg(name: str, **card) -> RegisteredModel:
    return RegisteredModel(name, "1", "run", Path("/nowhere"), card)


@pytest.fixture
def sampler() -> Sampler:
    prior = {"n_ctx": 128, "config": {"n_artists": 4, "n_genres": 4}}
    models = ModelSet(priors={lv: _reg(f"prior-{lv}", **prior) for lv in ("top", "middle", "bottom")},
                      vqvaes={lv: _reg(f"vqvae-{lv}") for lv in ("top", "middle", "bottom")}, sample_rate=44100, vocab=VOCAB)
    return Sampler(models, device="cpu")


def test_tokens_are_whole_top_tokens_at_every_level(sampler):
    assert sampler.tokens(1.0) == {"top": 345, "middle": 1380, "bottom": 5520}  # 44,100 samples -> 345 x 128
    assert sampler.models.sampled_levels() == ["top", "middle", "bottom"]


def test_segments_cover_a_level_and_start_from_what_is_known(sampler):
    known = np.arange(2 * 300).reshape(2, 300)
    segments = sampler.segments("middle", 1380, 2, segment_seconds=1.0, known=known)
    assert [(s.start, s.end) for s in segments] == [(0, 1376), (1376, 1380)]  # 1 s = 1378 tokens, whole upper tokens
    assert np.array_equal(segments[0].known, known) and segments[1].known.shape == (2, 0)
    top = sampler.segments("top", 345, 2)
    assert len(top) == 1 and top[0].known.shape == (2, 0)


def test_names_become_ids_and_an_unknown_name_is_refused(sampler):
    cond = sampler.conditioning(2.0, "Ada Lovelace", ["rock", "unknown"], "la la")
    assert (cond.artist, cond.genres[:2], cond.total_samples) == (1, [1, 0], 88200)
    assert cond.genres[2:] == [-1] * (len(cond.genres) - 2)
    with pytest.raises(ConfigError, match="closest known: ada lovelace"):
        sampler.conditioning(2.0, "Ada Lovelase")


def test_upsampling_actors_share_the_gpus_there_are():
    from pipeline.sample.run import worker_gpus

    assert worker_gpus("cuda", 2, 4.0) == 1.0  # enough: a whole GPU each
    assert worker_gpus("cuda", 4, 1.0) == 0.25  # one GPU, four actors: a quarter each (a whole one each would wait forever)
    assert worker_gpus("cuda", 3, 0) == 0 and worker_gpus("cpu", 2, 8.0) == 0
