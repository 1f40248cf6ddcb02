"""ExSPAM's filter as real products (spanet_mm/models/real_dft.py) against torch.fft in
float64 and float32, at odd, even, non-square and one-pixel sizes."""

import pytest
import torch
import torch.nn.functional as F

from spanet_mm.models.real_dft import (
    angle_tables,
    bicubic_matrix,
    filter_spectrum,
    filter_spectrum_macs,
    real_dft_bases,
    resize_bicubic,
)

# Even and odd lengths (the Nyquist bin exists only for even W), tall and wide maps, the
# stage sizes of a 224 input and of an 800 x 1216 detection input, and one-pixel maps.
SIZES = [
    (1, 1),
    (1, 2),
    (2, 1),
    (2, 2),
    (3, 5),
    (4, 3),
    (5, 4),
    (7, 7),
    (14, 14),
    (28, 28),
    (56, 56),
    (64, 48),
    (97, 131),
    (1, 37),
    (40, 1),
    (25, 38),
    (200, 304),
]


def fft_filter(x, gain):
    height, width = x.shape[-2:]
    return torch.fft.irfft2(
        torch.fft.rfft2(x, norm='ortho') * gain, s=(height, width), norm='ortho'
    )


@pytest.mark.parametrize('size', SIZES)
def test_matches_the_fft(size):
    height, width = size
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    # Any real gain, not Hermitian along H (ExSPAM's is not), away from 0 and 1.
    gain = torch.rand(3, height, width // 2 + 1, dtype=torch.float64) * 2 - 0.5
    expected = fft_filter(x, gain)
    torch.testing.assert_close(filter_spectrum(x, gain), expected, atol=1e-12, rtol=0)
    # float32 bases and data: float32 rounding, not the angle error of large k n products.
    ours = filter_spectrum(x.float(), gain.float()).double()
    assert (ours - expected).abs().max() < 5e-6 * max(1.0, expected.abs().max().item())


def test_imaginary_parts_of_zero_and_nyquist_bins_are_ignored():
    """irfft drops them; the products must too (the sines there are exactly zero)."""
    bases = real_dft_bases(6, 8, torch.float64)
    assert bases.forward_w[1][:, 0].abs().max() == 0
    assert bases.forward_w[1][:, -1].abs().max() == 0  # Nyquist bin of W = 8
    assert bases.inverse_w[1][[0, -1]].abs().max() == 0
    assert bases.alpha.tolist() == [1, 2, 2, 2, 1]
    assert real_dft_bases(6, 7, torch.float64).alpha.tolist() == [1, 2, 2, 2]


def test_angles_are_reduced_in_integers():
    """cos(2 pi k n / N) for large k n: the reduction modulo N comes before the float angle."""
    cos, sin = angle_tables(300, 300, 300, torch.float32)
    k = torch.arange(300, dtype=torch.float64)
    angle = 2 * torch.pi * torch.remainder(k[:, None] * k[None, :], 300) / 300
    assert (cos.double() - torch.cos(angle)).abs().max() < 1e-6
    assert (sin.double() - torch.sin(angle)).abs().max() < 1e-6


def test_gradients_flow_like_the_fft():
    x = torch.randn(1, 2, 9, 6, dtype=torch.float64, requires_grad=True)
    gain = torch.rand(2, 9, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 2, 9, 6, dtype=torch.float64)
    ours = torch.autograd.grad((filter_spectrum(x, gain) * target).sum(), (x, gain))
    theirs = torch.autograd.grad((fft_filter(x, gain) * target).sum(), (x, gain))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_macs():
    # 56 x 56 (K = 29): 4 * 56 * 56 * 29 + 8 * 56 * 56 * 29
    assert filter_spectrum_macs(56, 56) == 12 * 56 * 56 * 29
    assert filter_spectrum_macs(1, 1) == 12


@pytest.mark.parametrize('stored', [(56, 29), (7, 4), (1, 1), (3, 2)])
@pytest.mark.parametrize('size', [(1, 1), (1, 5), (2, 3), (7, 4), (56, 29), (57, 30), (200, 153)])
def test_bicubic_products_match_interpolate(stored, size):
    """The gain's resize as exported: F.interpolate's bicubic, align_corners=True, borders
    clamped; exact in float64, float32 rounding in float32."""
    weight = torch.randn(3, *stored, dtype=torch.float64)
    expected = F.interpolate(weight[None], size=size, mode='bicubic', align_corners=True)[0]
    torch.testing.assert_close(resize_bicubic(weight, size), expected, atol=1e-12, rtol=0)
    ours = resize_bicubic(weight.float(), size).double()
    assert (ours - expected).abs().max() < 8e-6 * max(1.0, weight.abs().max().item())
    if size == stored:
        assert torch.equal(bicubic_matrix(size[0], stored[0]), torch.eye(size[0]))
