import dataclasses

import numpy as np
import pytest
import torch

from models.prior import Prior
from models.prior_configs import TINY
from models.sampling import SamplingSettings, TokenSampler, choose, filter_logits, window_starts
from models.transformer import TransformerConfig
from pipeline.sample.level import Conditioning, LevelSampler, Segment


def tiny(level: str = "top", **transformer) -> Prior:
    base = TINY[level]
    tr = dataclasses.replace(base.transformer, **{"width": 32, "depth": 3, "n_ctx": 64, "block_len": 8, **transformer})
    if base.lyrics is not None:
        tr = dataclasses.replace(tr, cross_layers=(2,))
    torch.manual_seed(0)
    return Prior(dataclasses.replace(base, transformer=tr)).eval()


def cond(prior: Prior, n: int, artist: int = 1) -> dict[str, torch.Tensor]:
    c = {"artist": torch.full((n,), artist), "genres": torch.tensor([[1, -1]] * n), "total_length": torch.full((n,), 44100 * 3),
         "offset": torch.zeros(n, dtype=torch.long)}
    if prior.cfg.lyrics is not None:
        c["lyrics"] = torch.randint(2, 40, (n, prior.cfg.lyrics.encoder.n_ctx), generator=torch.Generator().manual_seed(5))
    return c


def test_kv_cache_sampling_gives_the_codes_of_full_forwards():
    prior, n, length = tiny(), 2, 64
    settings = SamplingSettings(temperature=0.9, top_k=50)
    codes = TokenSampler(prior, settings).window(cond(prior, n), torch.zeros(n, 0, dtype=torch.long), length,
                                                 torch.Generator().manual_seed(3))
    # the same draws, each token chosen from a full forward over everything sampled before it
    g = torch.Generator().manual_seed(3)
    ref = torch.zeros(n, length, dtype=torch.long)
    with torch.no_grad():
        for pos in range(length):
            logits = prior({**cond(prior, n), "codes": ref})["logits"][:, pos]  # causal: later (zero) codes change nothing
            ref[:, pos] = choose(logits, torch.rand(n, prior.cfg.bins, generator=g), settings)
    assert torch.equal(codes, ref)


def test_a_compiled_step_samples_the_same_codes():
    prior, n = tiny(), 1
    known = torch.randint(0, prior.cfg.bins, (n, 10), generator=torch.Generator().manual_seed(1))
    runs = [TokenSampler(prior, SamplingSettings(), compile=c).window(cond(prior, n), known, 40, torch.Generator().manual_seed(2))
            for c in (False, True)]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :10], known)  # the primed tokens are kept


def test_same_seed_same_codes_and_guidance_changes_them():
    prior = tiny()
    window = lambda s, seed: TokenSampler(prior, s).window(cond(prior, 2), torch.zeros(2, 0, dtype=torch.long), 48,  # noqa: E731
                                                          torch.Generator().manual_seed(seed))
    plain = window(SamplingSettings(), 7)
    assert torch.equal(plain, window(SamplingSettings(), 7))
    assert not torch.equal(plain, window(SamplingSettings(), 8))
    guided = window(SamplingSettings(cfg=3.0), 7)
    assert guided.shape == plain.shape and not torch.equal(guided, plain)


def test_top_k_and_top_p_keep_the_most_likely_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, 2, 0.0)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, 0, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, 0, 0.4)).tolist() == [[False, True, True, True]]
    u = torch.rand(1000, 4, generator=torch.Generator().manual_seed(0))
    drawn = choose(logits.expand(1000, 4), u, SamplingSettings(temperature=1.0, top_k=2))
    assert set(drawn.tolist()) == {0, 1} and abs((drawn == 0).float().mean().item() - 0.625) < 0.05  # 0.5 / (0.5 + 0.3)


def test_windows_cover_the_level_and_keep_context():
    assert list(window_starts(100, 64, 32, 0)) == [(0, 64), (32, 96), (36, 100)]  # the last window: a full context
    assert list(window_starts(64, 64, 32, 0)) == [(0, 64)]
    assert list(window_starts(200, 64, 32, 40, align=4)) == [(8, 72), (40, 104), (72, 136), (104, 168), (136, 200)]
    with pytest.raises(ValueError):
        next(window_starts(100, 64, 30, 0, align=4))


def test_windowed_sampling_leaves_what_was_sampled_unchanged():
    prior = tiny()
    sampler = LevelSampler("top", prior, SamplingSettings(), Conditioning(1, [1, -1], 44100 * 3), 2, 0, 0.5, False)
    known = np.random.default_rng(0).integers(0, prior.cfg.bins, (2, 20))
    steps = list(sampler.sample(Segment("top", 0, 0, 150, known)))
    assert [s.shape[1] for s in steps] == [64, 96, 128, 150]
    for before, after in zip(steps, steps[1:]):
        assert np.array_equal(after[:, :before.shape[1]], before)  # later windows never rewrite earlier tokens
    assert np.array_equal(steps[-1][:, :20], known)
    # resuming from any window's codes gives the same segment
    again = list(sampler.sample(Segment("top", 0, 0, 150, steps[1])))
    assert np.array_equal(again[-1], steps[-1])


def test_an_upsampler_window_sees_its_upper_codes():
    prior = tiny("middle")
    upper = np.random.default_rng(0).integers(0, 256, (1, 40))
    sampler = LevelSampler("middle", prior, SamplingSettings(), Conditioning(0, [0, -1], 44100), 1, 0, 0.5, False, upper, 4)
    codes = list(sampler.sample(Segment("middle", 0, 0, 160, np.zeros((1, 0), dtype=np.int64))))[-1]
    other = LevelSampler("middle", prior, SamplingSettings(), Conditioning(0, [0, -1], 44100), 1, 0, 0.5, False, upper[:, ::-1].copy(), 4)
    assert codes.shape == (1, 160)
    assert not np.array_equal(codes, list(other.sample(Segment("middle", 0, 0, 160, np.zeros((1, 0), dtype=np.int64))))[-1])


def test_the_static_step_matches_for_every_pattern():
    from models.transformer import Transformer

    cfg = TransformerConfig(width=32, depth=4, heads=2, n_ctx=32, block_len=8)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    x = torch.randn(1, 32, 32)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(1)
        for t in range(32):
            out, k, v = model.step(x[:, t:t + 1], torch.tensor(t), cache)
            model.write(cache, torch.tensor(t), k, v)
            torch.testing.assert_close(out[:, 0], full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("level,factorized,n_known", [("top", True, 21), ("top", True, 32), ("middle", True, 13), ("top", False, 5)])
def test_a_prefill_writes_the_cache_the_one_token_steps_write(level, factorized, n_known):
    prior = tiny(level, factorized=factorized)
    n = 2
    batch = cond(prior, n)
    if prior.cfg.upsampler is not None:
        batch["upper_codes"] = torch.randint(0, 256, (n, 16), generator=torch.Generator().manual_seed(4))
    known = torch.randint(0, prior.cfg.bins, (n, n_known), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stepped, batched = prior.start_sampling(batch), prior.start_sampling(batch)
        previous = torch.zeros(n, dtype=torch.long)
        for pos in range(n_known):
            _, k, v = prior.token_logits(stepped, previous, torch.tensor(pos))
            prior.transformer.write(stepped, torch.tensor(pos), k, v)
            previous = known[:, pos]
        prior.transformer.write_prefix(batched, *prior.prefill(batched, known))
        for key in ("k", "v"):
            torch.testing.assert_close(batched[key], stepped[key], atol=1e-5, rtol=1e-5)
        # the next token's logits from either cache
        pos = torch.tensor(n_known)
        torch.testing.assert_close(prior.token_logits(batched, known[:, -1], pos)[0], prior.token_logits(stepped, known[:, -1], pos)[0],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("level,settings", [("top", SamplingSettings()), ("top", SamplingSettings(cfg=2.0, top_k=40)),
                                            ("middle", SamplingSettings(temperature=0.99))])
def test_windows_sample_the_same_codes_with_and_without_the_prefill(level, settings):
    prior = tiny(level)
    upper = np.random.default_rng(0).integers(0, 256, (2, 60))
    ratio = 4 if level == "middle" else 1
    known = np.random.default_rng(1).integers(0, prior.cfg.bins, (2, 27))  # a prompt that is not a whole number of blocks
    runs = []
    for batched in (True, False):
        sampler = LevelSampler(level, prior, settings, Conditioning(1, [1, -1], 44100 * 3), 2, 0, 0.5, False, upper, ratio)
        sampler.sampler.batched_prefill = batched
        runs.append(list(sampler.sample(Segment(level, 0, 0, 200, known)))[-1])  # 5 windows, each continuing a context of 32
    assert runs[0].shape == (2, 200)
    assert np.array_equal(runs[0], runs[1])
