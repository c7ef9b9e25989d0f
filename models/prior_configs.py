"""The paper's priors beside tiny CPU ones (docs/jukebox-reference.md §3).

Paper counts of the original implementation are checked against these on the meta device
(tests/models/test_prior.py). Two deliberate differences, both small: every transformer ends
with a LayerNorm (2 x width parameters) before the output layer, and the 1B lyrics model,
which the original builds as one transformer over [lyrics; music] tokens with three
music-to-lyrics attention layers, is built here with the same encoder-decoder path as the
5B lyrics model (a 6-layer width-512 lyrics encoder, the three layers attending to it).
"""

from __future__ import annotations

from models.conditioning import LyricsConfig, UpsamplerConfig
from models.prior import PriorConfig
from models.transformer import TransformerConfig

# The top prior without lyrics (5b), with lyrics (5b_lyrics: 79 layers, encoder-decoder attention
# in layers 18, 28, ..., 78), the upsamplers, and the public 1B lyrics top prior.
PAPER: dict[str, PriorConfig] = {
    "top": PriorConfig(level=2, hop_length=128, transformer=TransformerConfig(
        width=4800, depth=72, heads=8, n_ctx=8192, block_len=64, checkpoint_activations=True)),
    "top_lyrics": PriorConfig(level=2, hop_length=128, min_duration_s=23.8, transformer=TransformerConfig(
        width=4800, depth=79, heads=8, n_ctx=8192, block_len=64, cross_layers=tuple(range(18, 79, 10)),
        checkpoint_activations=True), lyrics=LyricsConfig()),
    "middle": PriorConfig(level=1, hop_length=32, timing=False, tie_output=True, upsampler=UpsamplerConfig(),
                          transformer=TransformerConfig(width=1920, depth=72, heads=1, n_ctx=8192, block_len=64,
                                                        checkpoint_activations=True)),
    "bottom": PriorConfig(level=0, hop_length=8, timing=False, tie_output=True, upsampler=UpsamplerConfig(),
                          transformer=TransformerConfig(width=1920, depth=72, heads=1, n_ctx=8192, block_len=64,
                                                        checkpoint_activations=True)),
    "top_1b_lyrics": PriorConfig(
        level=2, hop_length=128, n_artists=7898, n_genres=604, timing_bins=64, min_duration_s=17.84, tie_output=True,
        transformer=TransformerConfig(width=2048, depth=72, heads=2, n_ctx=6144, block_len=64, cross_layers=(15, 31, 63),
                                      checkpoint_activations=True),
        lyrics=LyricsConfig(n_vocab=80, encoder=TransformerConfig(width=512, depth=6, heads=2, n_ctx=384, block_len=16))),
}

# The original implementation's counts at the same hyperparameters (../shared/peer/param_counts.json).
PAPER_COUNTS = {"top": 5_060_452_800, "top_lyrics": 5_640_506_800, "middle": 981_298_176, "bottom": 981_298_176,
                "top_1b_lyrics": 942_643_200}
PAPER_PART_COUNTS = {"top": {"transformer": 4_979_318_400},
                     "middle": {"transformer": 797_333_760, "upsampler_conditioner": 156_180_096},
                     "bottom": {"transformer": 797_333_760, "upsampler_conditioner": 156_180_096}}

# CPU-sized: the tiny VQ-VAE's 256 codes; ~1-2 M parameters; a context of 512 tokens.
_TINY_UPSAMPLER = UpsamplerConfig(upper_bins=256, width=64, depth=4, dilation_growth=3, dilation_cycle=4)
TINY: dict[str, PriorConfig] = {
    "top": PriorConfig(level=2, bins=256, hop_length=128, n_artists=64, n_genres=64, timing_bins=32, min_duration_s=1.0,
                       transformer=TransformerConfig(width=128, depth=6, heads=2, n_ctx=512, block_len=32, cross_layers=(5,)),
                       lyrics=LyricsConfig(encoder=TransformerConfig(width=64, depth=2, heads=2, n_ctx=128, block_len=16))),
    "middle": PriorConfig(level=1, bins=256, hop_length=32, n_artists=64, n_genres=64, timing=False, tie_output=True,
                          upsampler=_TINY_UPSAMPLER,
                          transformer=TransformerConfig(width=128, depth=6, heads=2, n_ctx=512, block_len=32)),
    "bottom": PriorConfig(level=0, bins=256, hop_length=8, n_artists=64, n_genres=64, timing=False, tie_output=True,
                          upsampler=_TINY_UPSAMPLER,
                          transformer=TransformerConfig(width=128, depth=6, heads=2, n_ctx=512, block_len=32)),
}
