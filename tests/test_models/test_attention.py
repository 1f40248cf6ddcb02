"""The hybrid SPANetV2 stages' global attention (spanet_mm/models/attention.py) against the
formula written out with explicit matrices."""

import pytest
import torch

from spanet_mm.models.attention import Attention, MixAttention


def naive_attention(module, x):
    """softmax(q k^T / sqrt(d)) v per head, channel head * d + i, then the projection."""
    batch, height, width, channels = x.shape
    heads, dims = module.num_heads, module.head_dims
    qkv = x.reshape(batch, height * width, channels) @ module.qkv.weight.t()
    q, k, v = qkv.reshape(batch, height * width, 3, heads, dims).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / dims**0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, height, width, channels)
    return out, v


@pytest.mark.parametrize('size', [(5, 7), (1, 1), (8, 8)])
def test_attention_equals_the_formula(size):
    torch.manual_seed(0)
    module = Attention(64, head_dims=32).double()
    x = torch.randn(2, *size, 64, dtype=torch.double)
    out, _ = naive_attention(module, x)
    torch.testing.assert_close(module(x), out @ module.proj.weight.t())


def test_mix_attention_adds_the_depthwise_conv_of_the_values():
    torch.manual_seed(0)
    module = MixAttention(64, head_dims=16, kernel_size=7).double()
    x = torch.randn(2, 6, 9, 64, dtype=torch.double)
    out, v = naive_attention(module, x)
    batch, height, width, channels = x.shape
    values = v.transpose(1, 2).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    local = torch.nn.functional.conv2d(
        values, module.local_conv.weight, padding=3, groups=channels
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(module(x), (out + local) @ module.proj.weight.t())


def test_positions_are_mixed_globally():
    """Changing one position changes the output at every other one."""
    torch.manual_seed(0)
    module = Attention(32)
    x = torch.randn(1, 4, 4, 32)
    changed = x.clone()
    changed[0, 0, 0] += 1
    with torch.no_grad():
        difference = (module(changed) - module(x)).abs().sum(-1)
    assert (difference > 0).all()


@pytest.mark.parametrize('embed_dims, head_dims', [(48, 32), (64, 0)])
def test_channels_must_split_into_heads(embed_dims, head_dims):
    with pytest.raises(ValueError, match=f'embed_dims={embed_dims}, head_dims={head_dims}'):
        Attention(embed_dims, head_dims)
