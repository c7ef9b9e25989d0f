"""The level vocabulary: one home, the paper's hops, the upper level and the ratios."""

import pytest

from models import levels
from models.prior_configs import PAPER, TINY
from models.vqvae import PAPER as VQVAE_PAPER


def test_the_paper_hops_and_ratios():
    assert [levels.hop(lv) for lv in levels.LEVELS] == [8, 32, 128]
    assert (levels.upper("bottom"), levels.upper("middle")) == ("middle", "top")
    assert levels.ratio("bottom") == levels.ratio("middle") == 4
    assert levels.SAMPLING_ORDER == tuple(reversed(levels.LEVELS))
    assert levels.tokens_for(1000, "top") == 8 and levels.tokens_for(1000, "bottom") == 128  # whole top tokens
    with pytest.raises(ValueError, match="no upper level"):
        levels.upper("top")
    with pytest.raises(ValueError, match="unknown level 'side'"):
        levels.hop("side")


def test_every_preset_agrees_with_the_levels():
    for name, cfg in VQVAE_PAPER.items():
        assert cfg.hop_length == levels.hop(name) and levels.LEVELS[cfg.level] == name
    for presets in (PAPER, TINY):
        for name in levels.LEVELS:
            cfg = presets[name]
            assert cfg.hop_length == levels.hop(name) and levels.index(name) == cfg.level
            if cfg.upsampler is not None:
                assert 2 ** cfg.upsampler.stages == levels.ratio(name)
