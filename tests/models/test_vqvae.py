import pytest
import torch

from models.codebook import EMACodebook
from models.levels import LEVELS
from models.losses import LossScales, spectral_convergence_db, spectral_distance, vqvae_loss
from models.vqvae import PAPER, TINY, VQVAE, count_parameters

# the original implementation's counts at the paper's hyperparameters (encoder, decoder)
ORIGINAL = {"bottom": (441_856, 458_177), "middle": (116_384, 124_641), "top": (168_224, 176_481)}


def test_paper_configs_match_the_original_sizes():
    total = 0
    for name in LEVELS:
        with torch.device("meta"):
            model = VQVAE(PAPER[name])
        n = count_parameters(model)
        enc, dec = ORIGINAL[name]
        assert abs(n["encoder"] - enc) <= 0.02 * enc and abs(n["decoder"] - dec) <= 0.02 * dec, (name, n)
        assert n["codebook_entries"] == 2048 * 64 and not any(p.requires_grad for p in model.codebook.buffers())
        total += n["encoder"] + n["decoder"]
    assert abs(total - 1_485_763) <= 0.02 * 1_485_763, total
    assert [PAPER[n].hop_length for n in LEVELS] == [8, 32, 128]


@pytest.mark.parametrize("name", LEVELS)
def test_shapes_for_every_level(name):
    torch.manual_seed(0)
    model = VQVAE(TINY[name])
    audio = torch.randn(2, 4096, 1) * 0.1
    out = model(audio)
    assert out["recon"].shape == audio.shape and out["codes"].shape == (2, 4096 // model.hop_length)
    model.eval()
    codes = model.encode(audio)
    assert codes.shape == (2, 4096 // model.hop_length) and codes.dtype == torch.long
    assert model.decode(codes).shape == audio.shape


def test_straight_through_gradients_reach_the_encoder():
    torch.manual_seed(0)
    model = VQVAE(TINY["bottom"])
    audio = torch.randn(2, 2048, 1) * 0.1
    parts = vqvae_loss(model(audio), audio, model.cfg, LossScales())
    parts["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(v.isfinite() for v in parts.values())


def test_ema_update_moves_a_code_towards_its_vectors():
    book = EMACodebook(4, 2, decay=0.9, restart_threshold=0.0)
    book.codes.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]]))
    book.ema_sum.copy_(book.codes)
    book.initialised.fill_(True)
    book.train()
    z = torch.tensor([[1.0, 1.0]] * 8).t()[None].requires_grad_()  # (1, width 2, 8 frames), all nearest to code 0
    codes, z_q, commit, stats = book(z)
    assert (codes == 0).all() and stats["codes_in_batch"] == 1
    # ema_sum = 0.9 * 0 + 0.1 * 8 * [1, 1]; ema_count = 0.9 * 1 + 0.1 * 8
    assert torch.allclose(book.codes[0], torch.tensor([0.8, 0.8]) / 1.7, atol=1e-6)
    assert torch.allclose(book.codes[1], torch.tensor([10.0, 10.0]) * 0.9 / 0.9, atol=1e-5)
    # straight-through: the value is the (updated) code, the gradient flows to z unchanged
    assert commit > 0 and torch.allclose(z_q, book.codes[0][None, :, None].expand(1, 2, 8))
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_a_dead_code_is_restarted_from_the_batch():
    torch.manual_seed(0)
    book = EMACodebook(4, 2, decay=0.5, restart_threshold=1.0)
    book.codes.copy_(torch.tensor([[0.0, 0.0], [1000.0, 1000.0], [0.1, 0.0], [0.0, 0.1]]))
    book.ema_sum.copy_(book.codes)
    book.initialised.fill_(True)
    book.train()
    z = torch.randn(1, 2, 64) * 0.05
    book(z)  # code 1 gets no use: its EMA count 1 -> 0.5 < 1, so it is replaced by a batch vector
    assert book.codes[1].abs().max() < 1.0
    flat = z[0].t()
    assert torch.cdist(book.codes[1:2], flat).min() < 0.1  # one of the batch vectors (plus tiny noise at most)


def test_quantise_and_update_match_the_brute_force_definitions():
    torch.manual_seed(0)
    book = EMACodebook(32, 4, decay=0.9, restart_threshold=0.0)
    book.codes.copy_(torch.randn(32, 4))
    book.ema_sum.copy_(book.codes)
    book.initialised.fill_(True)
    book.train()
    z = torch.randn(2, 4, 50)
    flat = z.transpose(1, 2).reshape(-1, 4)
    nearest = torch.cdist(flat, book.codes).argmin(1)
    onehot = torch.nn.functional.one_hot(nearest, 32).float()
    expected = (0.9 * book.ema_sum + 0.1 * onehot.t() @ flat) / (0.9 * book.ema_count + 0.1 * onehot.sum(0))[:, None]
    codes, *_ = book(z)
    assert torch.equal(codes.flatten(), nearest)
    assert torch.allclose(book.codes, expected, atol=1e-6)


def test_a_once_popular_code_is_restarted_after_unused_batches_only_with_patience_set():
    torch.manual_seed(0)
    kept = {}
    for patience in (0, 3):
        book = EMACodebook(4, 2, decay=0.99, restart_threshold=1.0, restart_after_unused=patience)
        book.codes.copy_(torch.tensor([[0.0, 0.0], [1000.0, 1000.0], [0.1, 0.0], [0.0, 0.1]]))
        book.ema_sum.copy_(book.codes * 50)
        book.ema_count.fill_(50.0)  # code 1 was popular: its EMA count needs ~390 unused steps to reach 1
        book.initialised.fill_(True)
        book.train()
        for step in range(3):
            book(torch.randn(1, 2, 64) * 0.05)
            if step < 2:
                assert book.codes[1].abs().max() > 500  # unused for 1, then 2 batches: not yet
        kept[patience] = bool(book.codes[1].abs().max() > 500)
        assert book.steps_unused[1] == (3 if patience == 0 else 0)
    assert kept == {0: True, 3: False}  # the paper's rule keeps the zombie; patience 3 restarts it on the third batch


def test_a_codebook_saved_before_the_unused_counter_still_loads():
    book = EMACodebook(4, 2)
    state = {k: v for k, v in book.state_dict().items() if k != "steps_unused"}
    EMACodebook(4, 2).load_state_dict(state)  # strict


def test_spectral_loss_is_zero_for_identical_signals_and_grows_with_distortion():
    torch.manual_seed(0)
    settings = PAPER["bottom"].stft_settings
    x = torch.sin(torch.linspace(0, 2000, 16384))[None] * 0.5
    assert spectral_distance(x, x, settings) == 0
    losses = [float(spectral_distance(x, x + a * torch.randn_like(x), settings)) for a in (0.01, 0.05, 0.2)]
    assert losses == sorted(losses) and losses[0] > 0
    sc = [float(spectral_convergence_db(x, x + a * torch.randn_like(x))[0]) for a in (0.001, 0.01, 0.1)]
    assert sc == sorted(sc) and sc[0] < -30
    assert float(spectral_convergence_db(x, x)[0]) == pytest.approx(-200.0)


def test_codes_are_chosen_in_fp32_under_bf16_autocast():
    """Autocast would run the distance matmul in bf16 (8 bits of mantissa): codes chosen wrongly."""
    torch.manual_seed(0)
    cb = EMACodebook(512, 16)
    cb.codes.copy_(torch.randn(512, 16))
    z = torch.randn(2, 16, 300)
    exact = cb.quantise(z)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(cb.quantise(z)[0], exact)
    model = VQVAE(TINY["bottom"])
    x = torch.randn(1, 4096, 1) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out["commit_loss"].dtype == torch.float32 and out["recon"].dtype == torch.bfloat16


@pytest.mark.parametrize("c_in,mid,c_out,frames", [(32, 64, 1, 50), (16, 16, 2, 7), (8, 4, 1, 1)])
def test_the_last_upsampling_and_output_layer_as_one_map_are_the_two_layers(c_in, mid, c_out, frames):
    """Values and every gradient (input, both layers' weights and biases) of the composed map equal
    those of the two layers run one after the other, edges included."""
    from torch import nn

    from models.vqvae import upsample_and_project

    torch.manual_seed(0)
    up = nn.ConvTranspose1d(c_in, mid, 4, stride=2, padding=1).double()
    out = nn.Conv1d(mid, c_out, 3, padding=1).double()
    x = torch.randn(3, c_in, frames, dtype=torch.float64, requires_grad=True)
    ref, got = out(up(x)), upsample_and_project(x, up, out)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    params = [x, up.weight, up.bias, out.weight, out.bias]
    for a, b in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    other = nn.Conv1d(mid, c_out, 5, padding=2).double()  # another output layer: run as two layers
    torch.testing.assert_close(upsample_and_project(x, up, other), other(up(x)))


def test_the_decoder_decodes_as_its_layers_do():
    torch.manual_seed(0)
    model = VQVAE(TINY["middle"]).eval()
    z = torch.randn(2, TINY["middle"].emb_width, 12)
    torch.testing.assert_close(model._decode(z), model.decoder(z), rtol=1e-5, atol=1e-6)
