"""The point-wise linear layer shared by both generations: its fused inference path computes
what ``F.linear`` (and ``F.gelu``) compute, in the working dtype."""

import pytest
import torch
import torch.nn.functional as F

from spanet_mm.models.linear import pointwise_linear, runs_fused


@pytest.mark.parametrize('activation', ['none', 'gelu'])
@pytest.mark.parametrize('conv_weight', [False, True])
def test_inference_path_equals_plain_linear(activation, conv_weight):
    x = torch.randn(2, 5, 7, 24)
    weight, bias = torch.randn(40, 24), torch.randn(40)
    expected = F.linear(x, weight, bias)
    expected = F.gelu(expected) if activation == 'gelu' else expected
    as_given = weight[..., None, None] if conv_weight else weight
    with torch.no_grad():
        assert runs_fused(x)
        got = pointwise_linear(x, as_given, bias, activation)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_autograd_path_has_gradients():
    x = torch.randn(3, 8, requires_grad=True)
    weight = torch.randn(4, 8, requires_grad=True)
    assert not runs_fused(x) or not torch.is_grad_enabled()
    pointwise_linear(x, weight, activation='gelu').sum().backward()
    assert x.grad is not None and weight.grad is not None


def test_bfloat16_autocast_returns_the_working_dtype():
    x = torch.randn(2, 9, 16)
    weight = torch.randn(12, 16)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        got = pointwise_linear(x, weight)
    assert got.dtype == torch.bfloat16
    expected = F.linear(x.bfloat16().float(), weight.bfloat16().float())
    torch.testing.assert_close(got.float(), expected, atol=5e-2, rtol=2e-2)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of .* got 'relu'"):
        pointwise_linear(torch.randn(2, 3), torch.randn(4, 3), activation='relu')


@pytest.mark.parametrize('with_scale', [False, True])
@pytest.mark.parametrize('grad', [False, True])
def test_residual_is_added_in_every_path(with_scale, grad):
    """``residual * scale`` joins the product: inside oneDNN's kernel (float32 inference),
    or after it (autograd): the same sum either way."""
    x = torch.randn(2, 5, 7, 24)
    weight, bias = torch.randn(40, 24), torch.randn(40)
    residual = torch.randn(2, 5, 7, 40)
    scale = torch.randn(40) if with_scale else None
    expected = F.linear(x, weight, bias) + residual * (1 if scale is None else scale)
    with torch.set_grad_enabled(grad):
        assert runs_fused(x) is not grad
        got = pointwise_linear(x, weight, bias, residual=residual, residual_scale=scale)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('with_scale', [False, True])
def test_float32_residual_stream_stays_float32_under_bfloat16_autocast(with_scale):
    """A float32 residual stream is not rounded to bfloat16 by the sum: only the product is
    bfloat16."""
    x = torch.randn(3, 16)
    weight, bias = torch.randn(12, 16), torch.randn(12)
    residual = torch.randn(3, 12) * 100 + 0.001  # detail bfloat16 would round away
    scale = torch.rand(12) + 0.5 if with_scale else None
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        product = pointwise_linear(x, weight, bias)
        got = pointwise_linear(x, weight, bias, residual=residual, residual_scale=scale)
    assert product.dtype == torch.bfloat16 and got.dtype == torch.float32
    scaled = residual if scale is None else residual * scale
    torch.testing.assert_close(got, product.float() + scaled, atol=1e-4, rtol=1e-6)
