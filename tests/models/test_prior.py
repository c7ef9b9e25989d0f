import copy

import pytest
import torch

from models.conditioning import TimingConditioner, UpsamplerConditioner, UpsamplerConfig
from models.prior import Prior, count_parameters
from models.prior_configs import PAPER, PAPER_COUNTS, PAPER_PART_COUNTS, TINY


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_match_the_original_counts_within_2_percent(name):
    with torch.device("meta"):
        counts = count_parameters(Prior(PAPER[name]))
    assert abs(counts["total"] / PAPER_COUNTS[name] - 1) < 0.02, (name, counts)
    for part, expected in PAPER_PART_COUNTS.get(name, {}).items():
        assert abs(counts[part] / expected - 1) < 0.02, (name, part, counts[part])


def _batch(cfg, b=2, t=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = t or cfg.n_ctx
    batch = {"codes": torch.randint(0, cfg.bins, (b, t), generator=g), "artist": torch.tensor([3, 0][:b]),
             "genres": torch.tensor([[1, 2, -1], [0, -1, -1]][:b]),
             "total_length": torch.tensor([3_000_000, 9_000_000][:b]), "offset": torch.tensor([0, 441_000][:b])}
    if cfg.lyrics is not None:
        batch["lyrics"] = torch.randint(1, cfg.lyrics.n_vocab, (b, cfg.lyrics.encoder.n_ctx), generator=g)
    if cfg.upsampler is not None:
        batch["upper_codes"] = torch.randint(0, cfg.upsampler.upper_bins, (b, t // 2 ** cfg.upsampler.stages), generator=g)
    return batch


def _small(name):
    cfg = copy.deepcopy(TINY[name])
    cfg.transformer.n_ctx, cfg.transformer.block_len, cfg.transformer.width, cfg.transformer.depth = 64, 8, 32, 4
    if cfg.lyrics is not None:
        cfg.transformer.cross_layers = (3,)
        cfg.lyrics.encoder.n_ctx = 32
    return cfg


@pytest.mark.parametrize("name", ["top", "middle"])
def test_kv_cache_sampling_gives_the_logits_of_the_full_forward(name):
    torch.manual_seed(0)
    cfg = _small(name)
    model = Prior(cfg).eval()
    batch = _batch(cfg)
    with torch.no_grad():
        full = model(batch)["logits"]
        state = model.start_sampling(batch)
        steps = [model.step(state, batch["codes"][:, t - 1] if t else None, t) for t in range(cfg.n_ctx)]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["top", "middle"])
def test_a_code_only_changes_the_logits_after_it(name):
    cfg = _small(name)
    model = Prior(cfg).eval()
    batch = _batch(cfg)
    changed = dict(batch, codes=batch["codes"].clone())
    changed["codes"][:, 40] = (changed["codes"][:, 40] + 1) % cfg.bins
    with torch.no_grad():
        a, b = model(batch)["logits"], model(changed)["logits"]
    torch.testing.assert_close(a[:, :41], b[:, :41])  # the logits at 40 predict code 40: they see codes < 40
    assert not torch.allclose(a[:, 41:], b[:, 41:])


def test_loss_reports_bits_per_token_and_lyrics_and_backpropagates():
    cfg = _small("top")
    model = Prior(cfg)
    loss, metrics = model.loss(_batch(cfg))
    assert set(metrics) == {"bits_per_token", "lyrics_bits_per_char"}
    assert 6.0 < metrics["bits_per_token"].item() < 10.0  # about log2(256) = 8 bits at initialisation
    loss.backward()
    assert model.lyrics.transformer.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.upsampler is None and model.timing is not None


def test_timing_bins_follow_length_offset_and_fraction():
    timing = TimingConditioner(bins=10, width=4, min_samples=0, max_samples=1000, hop_length=10)
    assert timing._bin(torch.tensor([0.0, 0.05, 0.99, 1.5, -1.0])).tolist() == [0, 0, 9, 9, 0]
    out = timing(torch.tensor([1000, 500]), torch.tensor([0, 250]), length=25)
    assert out.shape == (2, 25, 4)
    # the second song: at 250 + 10 p samples of 500, so the fraction bin reaches 9 at p = 20
    fraction = timing._bin((250 + torch.arange(25) * 10) / 500)
    assert fraction[0] == 5 and fraction[-1] == 9


def test_upsampler_conditioner_turns_upper_codes_into_one_vector_per_lower_position():
    cond = UpsamplerConditioner(UpsamplerConfig(upper_bins=16, width=8, depth=2, dilation_cycle=2), width=12)
    assert cond(torch.randint(0, 16, (3, 10))).shape == (3, 40, 12)


def test_conditioning_dropout_only_in_training():
    cfg = _small("middle")
    cfg.cond_dropout = 1.0
    model = Prior(cfg)
    batch = _batch(cfg)
    unknown = model.labels(torch.zeros(2, dtype=torch.long), torch.tensor([[0, -1, -1]] * 2))
    torch.testing.assert_close(model.labels(batch["artist"], batch["genres"]), unknown)
    model.eval()
    assert not torch.allclose(model.labels(batch["artist"], batch["genres"]), unknown)


def test_dropout_acts_in_training_only_and_sampling_still_matches_the_forward():
    torch.manual_seed(0)
    cfg = _small("top")
    cfg.emb_dropout, cfg.transformer.resid_dropout = 0.3, 0.2
    model = Prior(cfg)
    batch = _batch(cfg)
    with torch.no_grad():
        assert not torch.allclose(model(batch)["logits"], model(batch)["logits"])  # a fresh mask each pass
        model.eval()
        full = model(batch)["logits"]
        torch.testing.assert_close(model(batch)["logits"], full)
        state = model.start_sampling(batch)
        steps = [model.step(state, batch["codes"][:, t - 1] if t else None, t) for t in range(cfg.n_ctx)]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("where", ["emb", "resid"])
def test_dropout_of_one_or_more_is_refused(where):
    cfg = _small("top")
    if where == "emb":
        cfg.emb_dropout = 1.0
    else:
        cfg.transformer.resid_dropout = 1.0
    with pytest.raises(ValueError, match=f"{where}_dropout 1.0 is outside"):
        Prior(cfg)
