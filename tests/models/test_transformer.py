import pytest
import torch
import torch.nn.functional as F

from models.transformer import Transformer, TransformerConfig, factorized_attention, pattern_mask


@pytest.mark.parametrize("kind", ["dense", "row", "col", "prev"])
def test_factorized_attention_equals_dense_attention_with_its_mask(kind):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 64, 8).unbind(0)
    out = factorized_attention(q, k, v, kind, block_len=8)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=pattern_mask(kind, 64, 8))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_patterns_are_causal_and_each_row_sees_itself():
    for kind in ("dense", "row", "col", "prev"):
        mask = pattern_mask(kind, 32, 8)
        assert not mask.triu(1).any(), kind
        assert mask.diagonal().all(), kind


def _model(**kw) -> Transformer:
    torch.manual_seed(1)
    return Transformer(TransformerConfig(width=32, depth=5, heads=2, n_ctx=32, block_len=8, **kw)).eval()


def test_a_future_token_never_changes_earlier_outputs():
    model = _model()
    x = torch.randn(2, 32, 32)
    y = x.clone()
    y[:, 19:] = torch.randn(2, 13, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :19], model(y)[:, :19])
        assert not torch.allclose(model(x)[:, 19:], model(y)[:, 19:])


@pytest.mark.parametrize("factorized", [True, False])
def test_key_value_cache_steps_equal_the_full_forward(factorized):
    model = _model(factorized=factorized, cross_layers=(4,))
    x, memory = torch.randn(2, 32, 32), torch.randn(2, 7, 32)
    with torch.no_grad():
        full = model(x, memory)
        cache = model.new_cache(2, memory)
        steps = []
        for t in range(32):
            pos = torch.tensor(t)
            out, keys, values = model.step(x[:, t:t + 1], pos, cache)
            model.write(cache, pos, keys, values)
            steps.append(out)
        steps = torch.cat(steps, dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="whole number of blocks"):
        TransformerConfig(n_ctx=100, block_len=64).validate()
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(width=30, heads=4).validate()


@pytest.mark.parametrize("kind", ["row", "col", "prev"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_attention_on_a_cpu_is_the_masked_attention(kind, dtype):
    """In bf16/fp16 on a CPU the blocks' attention is written out (faster than the fused kernel
    there): the same values, to the precision of the dtype, and the same gradients."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 32, 8) for _ in range(3))
    mask = pattern_mask(kind, 32, 8)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    low = [x.to(dtype).requires_grad_() for x in (q, k, v)]
    out = factorized_attention(*low, kind, block_len=8)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference, atol=3e-2, rtol=3e-2)
    g = torch.randn_like(reference)
    (out.float() * g).sum().backward()
    full = [x.detach().float().requires_grad_() for x in low]
    (F.scaled_dot_product_attention(*full, attn_mask=mask) * g).sum().backward()
    for a, b in zip(low, full):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=6e-2, rtol=6e-2)
