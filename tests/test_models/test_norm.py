"""OneGroupNorm: GroupNorm with one group whose off-CPU path (a device-wide reduction and a
backward of its own) computes what ``nn.GroupNorm(1, C)`` computes. The off-CPU function runs
here on CPU tensors; which path a device takes is a plain ``device.type`` test."""

import pytest
import torch
from torch import nn

from spanet_mm.models import SPANet, SPANetV2
from spanet_mm.models.norm import OneGroupNorm, _OneGroupNorm, one_group_norm


def _affine_group_norm(channels):
    norm = nn.GroupNorm(1, channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


@pytest.mark.parametrize('shape', [(2, 8, 5, 7), (3, 6, 11), (1, 4, 1, 1)])
def test_function_matches_group_norm(shape):
    norm = _affine_group_norm(shape[1])
    x = torch.randn(shape) * 3 + 1
    torch.testing.assert_close(
        one_group_norm(x, norm.weight, norm.bias, norm.eps), norm(x), atol=1e-5, rtol=1e-5
    )
    plain = nn.GroupNorm(1, shape[1], affine=False)
    torch.testing.assert_close(
        one_group_norm(x, None, None, plain.eps), plain(x), atol=1e-5, rtol=1e-5
    )


def test_gradients_match_group_norm():
    norm = _affine_group_norm(6)
    x = torch.randn(2, 6, 9, 4, requires_grad=True)
    upstream = torch.randn(2, 6, 9, 4)
    ours = torch.autograd.grad(
        (one_group_norm(x, norm.weight, norm.bias, norm.eps) * upstream).sum(),
        (x, norm.weight, norm.bias),
    )
    theirs = torch.autograd.grad((norm(x) * upstream).sum(), (x, norm.weight, norm.bias))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_backward_passes_gradcheck_in_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_OneGroupNorm.apply, (x, weight, bias, 1e-5))
    # Frozen affine parameters: only the input's gradient is asked for.
    assert torch.autograd.gradcheck(_OneGroupNorm.apply, (x, weight.detach(), bias.detach(), 1e-5))


def test_autocast_gives_float32_like_group_norm():
    norm = _affine_group_norm(8)
    x = torch.randn(2, 8, 6, 6).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        ours = one_group_norm(x, norm.weight, norm.bias, norm.eps)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, norm(x.float()), atol=1e-5, rtol=1e-5)
    # Without autocast a half-precision input gets a half-precision result.
    assert one_group_norm(x, norm.weight, norm.bias, norm.eps).dtype == torch.bfloat16


def test_backbones_use_it_and_keep_the_group_norm_layout():
    for model in (
        SPANet(
            arch=dict(embed_dims=[8, 16], depths=[1, 1], radii=[2, 1], res_scale=[False, True]),
            out_indices=(0, 1),
        ),
        SPANetV2(arch='s18_hybrid'),
    ):
        norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
        assert norms and all(isinstance(m, OneGroupNorm) and m.num_groups == 1 for m in norms)
    norm = OneGroupNorm(5)
    assert sorted(norm.state_dict()) == sorted(nn.GroupNorm(1, 5).state_dict())
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(
        norm(x), nn.functional.group_norm(x, 1, norm.weight, norm.bias, norm.eps)
    )


def test_devices_other_than_the_cpu_take_the_reduction_path(monkeypatch):
    """The dispatch: CPU data and traced graphs get torch's GroupNorm, other devices (here
    the data-less 'meta' device, standing in for a GPU) the var_mean path."""
    import spanet_mm.models.norm as norm_module

    calls = []

    def recording(x, weight, bias, eps):
        calls.append(x.device.type)
        return x

    monkeypatch.setattr(norm_module, 'one_group_norm', recording)
    norm = OneGroupNorm(4)
    norm(torch.randn(2, 4, 3, 3))
    assert calls == []
    norm.to('meta')(torch.empty(2, 4, 3, 3, device='meta'))
    assert calls == ['meta']
    with pytest.raises(
        ValueError,
        match=r'OneGroupNorm expects \(N, 4, \.\.\.\) input, got '
        r'\(2, 5, 3\)',
    ):
        norm(torch.empty(2, 5, 3, device='meta'))
