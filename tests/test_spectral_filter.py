"""The Spectral Pooling Filter against the paper's equations."""
import pytest
import torch

from conftest import paper_filter, paper_mask

from spanet_mm import SpectralPoolingFilter, spectral_mask

SIZES = [(56, 56), (14, 14), (57, 56), (7, 7), (25, 38), (97, 211), (8, 8), (4, 4), (3, 5),
         (2, 2), (1, 1), (1, 7)]


@pytest.mark.parametrize('size,radius,counts', [
    # (disk d < r, ring d == r, outside)
    ((56, 56), 2, (9, 4, 56 * 56 - 13)),
    ((56, 56), 1, (1, 4, 56 * 56 - 5)),
    ((57, 31), 2, (9, 4, 57 * 31 - 13)),
    ((7, 7), 1, (1, 4, 44)),
    ((4, 4), 2, (9, 2, 5)),  # offsets -2..1: the ring's +2 bins do not exist
    ((3, 3), 2, (9, 0, 0)),
    ((2, 2), 1, (1, 2, 1)),
    ((1, 1), 1, (1, 0, 0)),
])
def test_mask_counts(size, radius, counts):
    balance = 0.8
    mask = spectral_mask(*size, radius, balance)
    outside = torch.isclose(mask, torch.tensor(1 - balance, dtype=mask.dtype))
    found = ((mask == balance).sum().item(), (mask == 1 / 3).sum().item(),
             outside.sum().item())
    assert found == counts
    assert mask[size[0] // 2, size[1] // 2] == balance  # the zero frequency
    assert torch.equal(mask, paper_mask(*size, radius, balance))


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('radius', [1, 2])
def test_filter_matches_paper(size, radius):
    balances = [0.7] * 3 + [0.8] * 3 + [0.9] * 2
    x = torch.randn(2, len(balances), *size)
    y = SpectralPoolingFilter(radius, balances)(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    expected = paper_filter(x, radius, balances)
    torch.testing.assert_close(y.double(), expected, atol=2e-6, rtol=1e-5)


def test_balance_half_halves_the_input():
    # lambda = 0.5 weighs every frequency 0.5 except the 1/3 ring; radius 0.5 has no ring.
    x = torch.randn(1, 2, 9, 12)
    y = SpectralPoolingFilter(0.5, [0.5, 0.5])(x)
    torch.testing.assert_close(y, 0.5 * x)


def test_filter_has_no_state():
    spf = SpectralPoolingFilter(2, [0.7, 0.9])
    spf(torch.randn(1, 2, 16, 16))
    spf(torch.randn(1, 2, 9, 13))
    assert list(spf.state_dict()) == [] and list(spf.parameters()) == []
    assert len(spf._cache) == 2  # one cached plan per feature size (and layout)


def test_filter_under_bfloat16_autocast():
    balances = [0.7, 0.8, 0.9]
    x = torch.randn(1, 3, 20, 27)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = SpectralPoolingFilter(2, balances)(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    expected = paper_filter(x.bfloat16().float(), 2, balances)
    torch.testing.assert_close(y.double(), expected, atol=2e-2, rtol=2e-2)


def test_filter_gradient_matches_paper():
    balances = [0.7, 0.9]
    x = torch.randn(1, 2, 11, 14, dtype=torch.float32, requires_grad=True)
    SpectralPoolingFilter(1, balances)(x).pow(2).sum().backward()
    x64 = x.detach().double().requires_grad_()
    paper_filter(x64, 1, balances).pow(2).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=1e-5, rtol=1e-5)


def test_filter_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r'expects \(N, 3, H, W\), got \(1, 4, 8, 8\)'):
        SpectralPoolingFilter(2, [0.7, 0.8, 0.9])(torch.randn(1, 4, 8, 8))
