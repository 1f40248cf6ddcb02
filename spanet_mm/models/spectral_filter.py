"""Spectral Pooling Filter (SPF), Section 4.1 of the SPANet paper.

The paper filters each channel as ``y = Re(IDFT(unshift(M * shift(DFT(x)))))`` with the
orthonormal DFT and a centred mask ``M`` (Eq. 16-18) that is ``balance`` inside a disk of
``radius`` around the zero frequency, ``1 - balance`` outside it, and (as in the authors'
release, whose weights were trained that way) ``1/3`` on the ring ``d == radius``.

How it is computed here (same linear map, no FFT, no complex numbers, no rolling):

1. ``M`` equals ``1 - balance`` everywhere but at the few frequencies ``(u, v)`` with
   ``|u|, |v| <= R = floor(radius)``, so ``y = (1 - balance) * x + K(x)`` where ``K`` only
   involves those frequencies, weighted by the mask's excess ``E(u, v) = M - (1 - balance)``.
2. ``K(x)[h, w] = sum_{u,v} E(u, v) / (H W) * sum_{h',w'} x[h', w']
   cos(2 pi (u (h - h') / H + v (w - w') / W))``: the real part of the inverse DFT of the
   masked DFT, written out. ``E`` depends on ``|u|`` and ``|v|`` only (the mask is a disk), so
   the sine parts of the ``+-u``, ``+-v`` terms cancel and the pair of a frequency and its
   mirror image adds up to ``cos(2 pi u (h - h') / H) cos(2 pi v (w - w') / W)``.
3. ``cos(a (h - h')) = cos(a h) cos(a h') + sin(a h) sin(a h')``, so with the real basis
   ``P`` (rows ``cos(2 pi u k / size)`` for ``u = 0..R`` and ``sin(2 pi u k / size)`` for
   ``u = 1..R``, ``2 R + 1`` rows in all) the correction is separable:
   ``K(x) = P_H^T (coef * (P_H x P_W^T)) P_W``, with ``coef`` the excess times how many of
   ``+u, -u`` exist on the grid (1 for ``u = 0``, and for sizes too small to hold both), over
   ``H W``.

For radius 2 that is a projection onto 5 x 5 real coefficients per channel and back: about
10 multiply-adds per input value, against ``2 log2(HW)`` complex FFT passes. On small maps
the same map is applied with the 2-D basis ``kron(P_H, P_W)`` in two products (fewer
operations, see ``DENSE_LIMIT``). Contiguous and channels-last data each have their own
path, so the data is never copied or rolled. The result equals
the paper's formula to float32 rounding (tests/test_spectral_filter.py,
tests/test_fast_paths.py).
"""
import math
from typing import Dict, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

# Value of the release's mask on the cut-off ring d == radius.
RING_VALUE = 1.0 / 3.0

# On small feature maps (H * W * (2R + 1) up to this), one product with the 2-D basis
# (fewer, larger operations) is faster than the separable form, which does less arithmetic
# but more, smaller operations. Both compute the same map.
DENSE_LIMIT = 4096


class _Operators(NamedTuple):
    """Per-size operators of a filter (float32), with ``A = 2 R + 1`` basis rows."""
    keep: Tensor  # (C, ): 1 - balance
    coef: Tensor  # (C, A, A): weight of each basis coefficient
    basis_h: Tensor  # (A, H)
    basis_w: Tensor  # (A, W)
    basis_2d: Optional[Tensor]  # (A * A, H * W): kron(basis_h, basis_w), small maps only


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


def _exists(offsets: Tensor, size) -> Tensor:
    """Which signed frequencies exist on a centred grid of ``size`` bins.

    The centred grid holds the offsets ``-(size // 2) .. size - 1 - size // 2``; written
    without floor division so that tracing keeps ``size`` symbolic.
    """
    return (2 * offsets < size) & (-2 * offsets <= size)


def _multiplicity(reach: int, size, device: torch.device) -> Tensor:
    """For ``u = 0..reach``, how many of the frequencies ``+u`` and ``-u`` exist on the grid
    (``u = 0`` counts once): 2 normally, fewer when ``size`` is too small to hold both."""
    freqs = torch.arange(reach + 1, device=device)
    count = _exists(freqs, size).to(torch.float64) + _exists(-freqs, size).to(torch.float64)
    return torch.where(freqs == 0, count / 2, count)


def _real_basis(reach: int, size, device: torch.device) -> Tensor:
    """``(2 reach + 1, size)`` rows: ``cos(2 pi u k / size)`` for ``u = 0..reach``, then
    ``sin(2 pi u k / size)`` for ``u = 1..reach`` (float64)."""
    positions = torch.arange(size, device=device).to(torch.float64)
    freqs = torch.arange(reach + 1, device=device).to(torch.float64)
    angles = (2 * math.pi / size) * freqs[:, None] * positions[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles[1:])], dim=0)


def _basis_frequencies(reach: int, device: torch.device) -> Tensor:
    """The ``|u|`` of each row of :func:`_real_basis`."""
    freqs = torch.arange(reach + 1, device=device)
    return torch.cat([freqs, freqs[1:]])


class SpectralPoolingFilter(nn.Module):
    """Spectral Pooling Filter applied channel-wise with a balance per channel.

    One module serves all ``N`` balances of a SPAM layer: channel ``c`` is filtered with
    ``channel_balances[c]``. Nothing here is a parameter or a buffer; the per-size operators
    are built on first use for each feature size and device and cached.

    Works on contiguous and channels-last inputs alike and keeps the input's memory format.

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
        self._cache: Dict[tuple, _Operators] = {}

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
        if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            return self._filter_float32(x)
        # Frequency-domain arithmetic in half precision loses the small correction terms,
        # so the filter always runs in float32 and hands back the surrounding dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self._filter_float32(x.float())
        return y.to(x.dtype)

    def _filter_float32(self, x: Tensor) -> Tensor:
        channels_last = _is_channels_last(x)
        if not channels_last:
            x = x.contiguous()
        ops = self._operators(x.shape[-2], x.shape[-1], x.device)
        if channels_last:
            # Work on the (N, H, W, C) view, which is contiguous: no copies.
            filter_nhwc = _dense_nhwc if ops.basis_2d is not None else _separable_nhwc
            return filter_nhwc(x.permute(0, 2, 3, 1), ops).permute(0, 3, 1, 2)
        filter_nchw = _dense_nchw if ops.basis_2d is not None else _separable_nchw
        return filter_nchw(x, ops)

    def _operators(self, height: int, width: int, device: torch.device) -> _Operators:
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        key = (height, width, device)
        if not tracing and key in self._cache:
            return self._cache[key]
        # Cached tensors must stay usable by autograd even if first built under
        # torch.inference_mode().
        with torch.inference_mode(False), torch.no_grad():
            # A traced graph must serve every size: it always takes the separable form.
            operators = self._build_operators(height, width, device, dense_ok=not tracing)
        if not tracing:
            self._cache[key] = operators
        return operators

    def _build_operators(self, height: int, width: int, device: torch.device,
                         dense_ok: bool = True) -> _Operators:
        """The operators of the module docstring for one feature size."""
        reach = int(math.floor(self.radius))
        freq_h = _basis_frequencies(reach, device)
        freq_w = _basis_frequencies(reach, device)
        dist2 = (freq_h[:, None]**2 + freq_w[None, :]**2).to(torch.float64)
        radius2 = self.radius**2
        inside = (dist2 < radius2).to(torch.float64)
        ring = (dist2 == radius2).to(torch.float64)
        count = (_multiplicity(reach, height, device)[freq_h][:, None]
                 * _multiplicity(reach, width, device)[freq_w][None, :])

        balances = torch.tensor(self.channel_balances, dtype=torch.float64, device=device)
        excess = (inside * (2 * balances[:, None, None] - 1)
                  + ring * (balances[:, None, None] - (1 - RING_VALUE)))
        # 1 / (H * W) is the two orthonormal scalings together.
        coef = excess * count / (height * width)
        keep = 1 - balances
        basis_h = _real_basis(reach, height, device)
        basis_w = _real_basis(reach, width, device)
        num_a = 2 * reach + 1
        basis_2d = None
        if dense_ok and height * width * num_a <= DENSE_LIMIT:
            basis_2d = (basis_h[:, None, :, None] * basis_w[None, :, None, :]).reshape(
                num_a * num_a, height * width).float()
        return _Operators(*(t.float() for t in (keep, coef, basis_h, basis_w)), basis_2d)


def _separable_nchw(x: Tensor, ops: _Operators) -> Tensor:
    """``(1 - balance) x + P_H^T (coef * (P_H x P_W^T)) P_W`` on contiguous (N, C, H, W)."""
    n, c, height, width = x.shape
    num_a = ops.basis_h.shape[0]
    z = ops.basis_h @ (x @ ops.basis_w.t())  # (N, C, A, A)
    s = (z * ops.coef) @ ops.basis_w  # (N, C, A, W)
    # (1 - balance) * x + basis_h^T @ s, as one batched multiply-add.
    y = _multiply_add((x * ops.keep[:, None, None]).view(n * c, height, width),
                      ops.basis_h.t().expand(n * c, height, num_a),
                      s.reshape(n * c, num_a, width))
    return y.view(n, c, height, width)


def _separable_nhwc(x: Tensor, ops: _Operators) -> Tensor:
    """The same on contiguous (N, H, W, C) data."""
    n, height, width, c = x.shape
    num_a = ops.basis_h.shape[0]
    # Contract W (a batched product over the N*H rows), then H.
    t = ops.basis_w @ x  # (N, H, A, C)
    z = ops.basis_h @ t.reshape(n, height, num_a * c)  # (N, A, A*C): rows u, then (v, c)
    z = z.view(n, num_a, num_a, c) * ops.coef.permute(1, 2, 0)
    s = ops.basis_h.t() @ z.view(n, num_a, num_a * c)  # (N, H, A*C)
    y = _multiply_add((x * ops.keep).view(n * height, width, c),
                      ops.basis_w.t().expand(n * height, width, num_a),
                      s.view(n * height, num_a, c))
    return y.view(n, height, width, c)


def _dense_nchw(x: Tensor, ops: _Operators) -> Tensor:
    """The same with the 2-D basis, on contiguous (N, C, H, W): two products."""
    n, c, height, width = x.shape
    flat = x.view(n, c, height * width)
    basis = ops.basis_2d
    z = (flat @ basis.t()) * ops.coef.flatten(1)  # (N, C, A*A)
    y = _multiply_add(flat * ops.keep[:, None], z, basis.expand(n, *basis.shape))
    return y.view(n, c, height, width)


def _dense_nhwc(x: Tensor, ops: _Operators) -> Tensor:
    """The same with the 2-D basis, on contiguous (N, H, W, C)."""
    n, height, width, c = x.shape
    flat = x.reshape(n, height * width, c)
    basis = ops.basis_2d
    z = (basis @ flat) * ops.coef.flatten(1).t()  # (N, A*A, C)
    y = _multiply_add(flat * ops.keep, basis.t().expand(n, height * width, basis.shape[0]),
                      z)
    return y.view(n, height, width, c)


def _multiply_add(y: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``y + a @ b`` (batched), written into ``y`` (a fresh tensor of the caller's) to save
    an allocation of the feature map's size; out of place while tracing, for exporters."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return torch.baddbmm(y, a, b)
    return y.baddbmm_(a, b)


def _is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` is stored channels-last (and not also plainly contiguous)."""
    return (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last)
