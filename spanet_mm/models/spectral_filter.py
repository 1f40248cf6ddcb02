"""Spectral Pooling Filter (SPF), Section 4.1 of the SPANet paper.

The paper filters each channel as ``y = Re(IDFT(unshift(M * shift(DFT(x)))))`` with the
orthonormal DFT and a centred mask ``M`` (Eq. 16-18) that is ``balance`` inside a disk of
``radius`` around the zero frequency, ``1 - balance`` outside it, and (as in the authors'
release, whose weights were trained that way) ``1/3`` on the ring ``d == radius``.

Because ``M`` equals ``1 - balance`` everywhere but a handful of frequencies, the same linear
map is ``y = (1 - balance) * x + K(x)``, where ``K`` only touches the few frequencies with
``|u|, |v| <= radius``. ``K`` is computed here with small real matrix products against cosine
and sine bases (a partial DFT), so there is no FFT, no complex tensor and no rolling of the
data; the result equals the paper's formula to float32 rounding (see tests/test_spectral_filter.py).
"""
import math
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor, nn

# Value of the release's mask on the cut-off ring d == radius.
RING_VALUE = 1.0 / 3.0


def spectral_mask(height: int, width: int, radius: float, balance: float,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """The paper's centred mask ``M^f`` for one balance (Eq. 16 and 18).

    The zero frequency sits at row ``height // 2`` and column ``width // 2``, where
    ``torch.fft.fftshift`` puts it, for odd and even sizes alike.

    Args:
        height (int): Number of frequency rows.
        width (int): Number of frequency columns.
        radius (float): Radius ``r`` of the low-frequency disk.
        balance (float): Balance ``lambda`` given to the low frequencies.
        dtype (torch.dtype): Dtype of the returned mask. Defaults to float64.

    Returns:
        Tensor: Mask of shape ``(height, width)``.
    """
    rows = torch.arange(height, dtype=torch.float64) - height // 2
    cols = torch.arange(width, dtype=torch.float64) - width // 2
    dist2 = rows[:, None]**2 + cols[None, :]**2
    radius2 = float(radius)**2
    mask = torch.full((height, width), 1.0 - balance, dtype=torch.float64)
    mask[dist2 < radius2] = balance
    mask[dist2 == radius2] = RING_VALUE
    return mask.to(dtype)


def _valid_offsets(offsets: Tensor, size: int) -> Tensor:
    """Which signed frequencies exist on a centred grid of ``size`` bins.

    The centred grid holds the offsets ``-(size // 2) .. size - 1 - size // 2``; written
    without floor division so that tracing keeps ``size`` symbolic.
    """
    return (2 * offsets < size) & (-2 * offsets <= size)


def _fourier_basis(offsets: Tensor, size: int) -> Tensor:
    """Rows ``cos(2 pi u k / size)`` then ``sin(2 pi u k / size)`` for each offset ``u``."""
    positions = torch.arange(size, dtype=torch.float64, device=offsets.device)
    angles = (2 * math.pi / size) * offsets.to(torch.float64)[:, None] * positions[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=0)


class SpectralPoolingFilter(nn.Module):
    """Spectral Pooling Filter applied channel-wise with a balance per channel.

    One module serves all ``N`` balances of a SPAM layer: channel ``c`` is filtered with
    ``channel_balances[c]``. Nothing here is a parameter or a buffer; the per-size operators
    are built on first use for each feature size and device and cached.

    Args:
        radius (float): Radius ``r`` of the low-frequency disk.
        channel_balances (Sequence[float]): Balance ``lambda`` of each input channel.
    """

    def __init__(self, radius: float, channel_balances: Sequence[float]) -> None:
        super().__init__()
        if radius < 0:
            raise ValueError(f'radius must be >= 0, got {radius}')
        self.radius = float(radius)
        self.channel_balances = tuple(float(b) for b in channel_balances)
        self._cache: Dict[tuple, Tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    @property
    def num_channels(self) -> int:
        return len(self.channel_balances)

    def extra_repr(self) -> str:
        balances = sorted(set(self.channel_balances))
        return (f'radius={self.radius:g}, channels={self.num_channels}, '
                f'balances={balances}')

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f'{type(self).__name__} expects (N, {self.num_channels}, H, W), '
                f'got {tuple(x.shape)}')
        # Frequency-domain arithmetic in half precision loses the small correction terms,
        # so the filter always runs in float32 and hands back the surrounding dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self._filter_float32(x.float())
        return y.to(x.dtype)

    def _filter_float32(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        keep, coef, basis_h, basis_w = self._operators(height, width, x.device)
        num_u = coef.shape[-2]
        # Partial DFT onto the few frequencies the mask singles out.
        proj = basis_h @ (x @ basis_w.transpose(0, 1))  # (N, C, 2U, 2U)
        cc, cs = proj[..., :num_u, :num_u], proj[..., :num_u, num_u:]
        sc, ss = proj[..., num_u:, :num_u], proj[..., num_u:, num_u:]
        # Re(X) = cc - ss and -Im(X) = cs + sc; scale them by the mask's excess over
        # 1 - balance and take the real part of the inverse transform.
        real = coef * (cc - ss)
        imag = coef * (cs + sc)
        spectrum = torch.cat(
            [torch.cat([real, imag], dim=-1),
             torch.cat([imag, -real], dim=-1)], dim=-2)
        correction = basis_h.transpose(0, 1) @ (spectrum @ basis_w)
        return x * keep + correction

    def _operators(self, height: int, width: int,
                   device: torch.device) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        key = (height, width, device)
        if not tracing and key in self._cache:
            return self._cache[key]
        # Cached tensors must stay usable by autograd even if first built under
        # torch.inference_mode().
        with torch.inference_mode(False), torch.no_grad():
            operators = self._build_operators(height, width, device)
        if not tracing:
            self._cache[key] = operators
        return operators

    def _build_operators(self, height: int, width: int,
                         device: torch.device) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        reach = int(math.floor(self.radius))
        offsets = torch.arange(-reach, reach + 1, device=device)
        dist2 = (offsets[:, None]**2 + offsets[None, :]**2).to(torch.float64)
        radius2 = self.radius**2
        exists = (_valid_offsets(offsets, height)[:, None]
                  & _valid_offsets(offsets, width)[None, :]).to(torch.float64)
        inside = (dist2 < radius2).to(torch.float64) * exists
        ring = (dist2 == radius2).to(torch.float64) * exists

        balances = torch.tensor(
            self.channel_balances, dtype=torch.float64, device=device)[:, None, None]
        # Mask minus (1 - balance): 2*balance - 1 inside the disk, balance - 2/3 on the
        # ring, zero elsewhere; 1 / (H * W) is the two orthonormal scalings together.
        excess = inside * (2 * balances - 1) + ring * (balances - (1 - RING_VALUE))
        coef = excess / (height * width)
        keep = 1 - balances
        basis_h = _fourier_basis(offsets, height)
        basis_w = _fourier_basis(offsets, width)
        return tuple(t.to(torch.float32) for t in (keep, coef, basis_h, basis_w))
