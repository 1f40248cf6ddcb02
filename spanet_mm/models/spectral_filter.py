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
operations, see ``DENSE_LIMIT``), keeping only its rows with a non-zero ``coef`` (the
products of frequencies inside the disk or on its ring: 13 of 25 for radius 2). Contiguous
and channels-last data each have their own path, so the data is never copied or rolled. On
channels-last data the correction is computed in two halves, the weighted coefficients
``coef * (P x)`` and their basis expansion added into ``(1 - balance) x``; SPAM runs that form
in the working dtype (:meth:`SpectralPoolingFilter.filter_nhwc`).

The operators depend on the filter only through its radius and balances, so one bounded,
least-recently-used table shared by all filters holds them (all blocks of a stage share an
entry per feature size). The result equals the paper's formula to float32 rounding
(tests/test_models/test_spectral_filter.py).
"""

import math
from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from .cache import LRUCache

# Value of the release's mask on the cut-off ring d == radius.
RING_VALUE = 1.0 / 3.0

# On small feature maps (H * W * (2R + 1) up to this), one product with the 2-D basis
# (fewer, larger operations) is faster than the separable form, which does less arithmetic
# but more, smaller operations. Both compute the same map.
DENSE_LIMIT = 4096


class _Operators(NamedTuple):
    """Per-size operators of one filter configuration, with ``A = 2 R + 1`` basis rows.

    Besides the operators themselves, the views each data layout multiplies with are kept
    here, so that a call runs a handful of products and no reshaping of the operators.
    """

    keep: Tensor  # (C, 1, 1): 1 - balance, broadcast over (C, H, W) in either layout
    keep_c: Tensor  # (C,): the same, for (..., C) data
    coef: Tensor  # (C, A, A): weight of each basis coefficient
    coef_hwc: Tensor  # (A * A, C): the same, for channels-last data
    basis_h: Tensor  # (A, H)
    basis_w: Tensor  # (A, W)
    basis_h_t: Tensor  # (H, A)
    basis_w_rows: Optional[Tensor]  # (H, A, W): basis_w for each row of one image
    basis_w_t_rows: Optional[Tensor]  # (H, W, A): its transpose, likewise
    # Small maps only: the K <= A * A rows of kron(basis_h, basis_w) that the mask weighs.
    basis_2d: Optional[Tensor]  # (K, H * W)
    basis_2d_t: Optional[Tensor]  # (H * W, K)
    coef_2d: Optional[Tensor]  # (C, K)
    coef_2d_t: Optional[Tensor]  # (K, C)


# Operator sets are small (tens of kB) but one is built per feature size (and filter
# configuration): 64 cover the four stages at 16 input sizes; detection training with many
# padded sizes evicts the least recently used ones.
OPERATOR_CACHE_SIZE = 64
_OPERATORS: LRUCache = LRUCache(OPERATOR_CACHE_SIZE)


class CacheInfo(NamedTuple):
    """What :meth:`SpectralPoolingFilter.cache_info` reports."""

    entries: int  # operator sets held
    capacity: int  # most operator sets held at once


def spectral_mask(
    height: int, width: int, radius: float, balance: float, dtype: torch.dtype = torch.float64
) -> Tensor:
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
    dist2 = rows[:, None] ** 2 + cols[None, :] ** 2
    radius2 = float(radius) ** 2
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
    are built on first use and kept in one table shared by all filters (filters with the same
    radius and balances, e.g. all blocks of a stage, share their operators), keyed by
    configuration, feature size, device and dtype, and bounded: it holds the
    ``OPERATOR_CACHE_SIZE`` most recently used operator sets (:meth:`cache_info`).

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
        # The operators depend on the filter only through radius and balances; runs of equal
        # balances keep the key short (3 runs for a SPAM layer of any width).
        runs: List[List] = []
        for balance in self.channel_balances:
            if runs and runs[-1][0] == balance:
                runs[-1][1] += 1
            else:
                runs.append([balance, 1])
        self._config = (self.radius, tuple(tuple(run) for run in runs))

    @property
    def num_channels(self) -> int:
        return len(self.channel_balances)

    def extra_repr(self) -> str:
        balances = sorted(set(self.channel_balances))
        return f'radius={self.radius:g}, channels={self.num_channels}, balances={balances}'

    @classmethod
    def cache_info(cls) -> CacheInfo:
        """How many operator sets the shared table holds, and how many it can hold."""
        return CacheInfo(len(_OPERATORS), _OPERATORS.capacity)

    @classmethod
    def clear_cache(cls) -> None:
        """Drop all cached operators (they are rebuilt on demand)."""
        _OPERATORS.clear()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            return self._filter_float32(x)
        # Called as a module, the filter keeps float32 accuracy: it runs in float32 and hands
        # back the surrounding dtype. (Inside SPAM, filter_nhwc() runs in the working dtype,
        # where a 1x1 conv of that dtype follows anyway.)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self._filter_float32(x.float())
        return y.to(x.dtype)

    def filter_nhwc(self, x: Tensor) -> Tensor:
        """The filter of NHWC data (the contiguous view of channels-last data) in the dtype of
        ``x`` (bfloat16 too: the products accumulate in float32 inside the kernels), without
        a float32 round trip. SPAM uses it between two bfloat16 1x1 convs under autocast,
        where a float32 result would be rounded to bfloat16 at once anyway.

        Args:
            x (Tensor): ``(N, H, W, C)``, contiguous.

        Returns:
            Tensor: ``(N, H, W, C)``, contiguous, the dtype of ``x``.
        """
        n, height, width, channels = x.shape
        if channels != self.num_channels or not x.is_contiguous():
            raise ValueError(
                f'{type(self).__name__}.filter_nhwc expects contiguous (N, H, W, '
                f'{self.num_channels}) data, got {tuple(x.shape)} with strides '
                f'{x.stride()}'
            )
        ops = self.operators(height, width, x.device, x.dtype)
        y = x * ops.keep_c
        _synthesis_nhwc_(y, _analysis_nhwc(x, ops), ops)
        return y

    def operators(
        self, height: int, width: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> _Operators:
        """The operators for one feature size, device and dtype (built once, then shared
        through the bounded table)."""
        if torch.compiler.is_compiling():
            # Under torch.compile the operators are built inside the graph (the compiler folds
            # or fuses their construction), in the separable form: the dense form keeps only
            # the basis rows the mask weighs, a selection whose size the compiler would have to
            # treat as data-dependent. The shared table, Python state, stays out of the graph.
            return _in_dtype(self._build_operators(height, width, device, dense=False), dtype)
        key = (self._config, height, width, device, dtype)
        return _OPERATORS.get_or_build(
            key, lambda: self._build_cached(height, width, device, dtype)
        )

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f'{type(self).__name__} expects (N, {self.num_channels}, H, W), '
                f'got {tuple(x.shape)}'
            )

    def _filter_float32(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # A traced graph must serve every size: operators built in the graph from the
            # traced size, and the separable form, which works for all sizes.
            with torch.no_grad():
                ops = self._build_operators(x.shape[-2], x.shape[-1], x.device, traced=True)
            return _separable_nchw(x.contiguous(), ops)
        # Contiguous and channels-last data each have their own path, so neither is copied.
        channels_last = not x.is_contiguous()
        if channels_last and not x.is_contiguous(memory_format=torch.channels_last):
            x, channels_last = x.contiguous(), False
        ops = self.operators(x.shape[-2], x.shape[-1], x.device)
        if channels_last:
            y = x * ops.keep  # channels-last, like x
            _synthesis_nhwc_(y.permute(0, 2, 3, 1), _analysis_nhwc(x.permute(0, 2, 3, 1), ops), ops)
            return y
        return (_dense_nchw if ops.basis_2d is not None else _separable_nchw)(x, ops)

    def _build_cached(
        self, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> _Operators:
        # Cached tensors must stay usable by autograd even if first built under
        # torch.inference_mode().
        with torch.inference_mode(False), torch.no_grad():
            return _in_dtype(self._build_operators(height, width, device), dtype)

    def _build_operators(
        self,
        height: int,
        width: int,
        device: torch.device,
        traced: bool = False,
        dense: bool = True,
    ) -> _Operators:
        """The operators of the module docstring for one feature size (float32).

        ``traced``: only what the size-independent separable form on contiguous data
        needs, built from the (traced) size. ``dense=False``: never the 2-D basis.
        """
        reach = int(math.floor(self.radius))
        freq_h = _basis_frequencies(reach, device)
        freq_w = _basis_frequencies(reach, device)
        dist2 = (freq_h[:, None] ** 2 + freq_w[None, :] ** 2).to(torch.float64)
        radius2 = self.radius**2
        inside = (dist2 < radius2).to(torch.float64)
        ring = (dist2 == radius2).to(torch.float64)
        count = (
            _multiplicity(reach, height, device)[freq_h][:, None]
            * _multiplicity(reach, width, device)[freq_w][None, :]
        )

        balances = torch.tensor(self.channel_balances, dtype=torch.float64, device=device)
        excess = inside * (2 * balances[:, None, None] - 1) + ring * (
            balances[:, None, None] - (1 - RING_VALUE)
        )
        # 1 / (H * W) is the two orthonormal scalings together.
        coef = (excess * count / (height * width)).float()
        keep_c = (1 - balances).float()
        basis_h = _real_basis(reach, height, device).float()
        basis_w = _real_basis(reach, width, device).float()
        num_a = 2 * reach + 1
        basis_2d = basis_2d_t = coef_2d = coef_2d_t = None
        if dense and not traced and height * width * num_a <= DENSE_LIMIT:
            # Only the basis products the mask weighs (inside the disk or on its ring, and
            # present on this grid): 13 of 25 for radius 2, 5 of 9 for radius 1. The others
            # have a zero coefficient.
            used = ((inside + ring) * count).flatten() > 0
            basis_2d = (basis_h[:, None, :, None] * basis_w[None, :, None, :]).reshape(
                num_a * num_a, height * width
            )[used]
            coef_2d = coef.flatten(1)[:, used]
            # Zero rows up to a multiple of 8 add nothing but put the products on the BLAS
            # kernels made for such widths (docs/implementation.md).
            padding = -len(basis_2d) % 8 if len(basis_2d) > 8 else 0
            basis_2d = nn.functional.pad(basis_2d, (0, 0, 0, padding))
            coef_2d = nn.functional.pad(coef_2d, (0, padding))
            basis_2d_t = basis_2d.t()
            coef_2d_t = coef_2d.t().contiguous()
        return _Operators(
            keep=keep_c[:, None, None],
            keep_c=keep_c,
            coef=coef,
            coef_hwc=coef.flatten(1).t().contiguous(),
            basis_h=basis_h,
            basis_w=basis_w,
            basis_h_t=basis_h.t(),
            basis_w_rows=None if traced else basis_w.expand(height, num_a, width),
            basis_w_t_rows=None if traced else basis_w.t().expand(height, width, num_a),
            basis_2d=basis_2d,
            basis_2d_t=basis_2d_t,
            coef_2d=coef_2d,
            coef_2d_t=coef_2d_t,
        )


def _in_dtype(ops: _Operators, dtype: torch.dtype) -> _Operators:
    """The operators in ``dtype`` (themselves when it is float32, their build dtype)."""
    if dtype == torch.float32:
        return ops
    return _Operators(*(None if t is None else t.to(dtype) for t in ops))


# Contiguous (N, C, H, W) data: the whole filter, written with explicit mm/bmm on ready-made
# views (in the backbone the filter runs between large convolutions that leave the caches
# cold, where every extra tensor operation costs a few microseconds). Each writes the
# correction into the fresh ``(1 - balance) x`` with one multiply-add.


def _separable_nchw(x: Tensor, ops: _Operators) -> Tensor:
    """``(1 - balance) x + P_H^T (coef * (P_H x P_W^T)) P_W`` on contiguous (N, C, H, W)."""
    n, c, height, width = x.shape
    num_a = ops.basis_h.shape[0]
    z = ops.basis_h @ (x @ ops.basis_w.t())  # (N, C, A, A)
    s = (z * ops.coef) @ ops.basis_w  # (N, C, A, W)
    y = _multiply_add(
        (x * ops.keep).view(n * c, height, width),
        ops.basis_h.t().expand(n * c, height, num_a),
        s.reshape(n * c, num_a, width),
    )
    return y.view(n, c, height, width)


def _dense_nchw(x: Tensor, ops: _Operators) -> Tensor:
    """The same with the 2-D basis, on contiguous (N, C, H, W): two products."""
    n, c, height, width = x.shape
    flat = x.view(n * c, height * width)
    z = torch.mm(flat, ops.basis_2d_t)  # (N*C, K)
    z = z * ops.coef_2d if n == 1 else (z.view(n, c, -1) * ops.coef_2d).view(n * c, -1)
    y = x * ops.keep
    y.view(n * c, height * width).addmm_(z, ops.basis_2d)
    return y


# NHWC data (the contiguous view of channels-last data), in two halves: the weighted
# coefficients of each channel, and their basis expansion added into the output.


def _analysis_nhwc(x: Tensor, ops: _Operators) -> Tensor:
    """``coef * (P x)`` of NHWC ``x``: (N, K, C), K the dense form's rows or ``A * A``."""
    n, height, width, c = x.shape
    if ops.basis_2d is not None:
        basis = ops.basis_2d
        if n == 1:  # a plain product: two tensor operations fewer than the batched one
            return torch.mm(basis, x.view(height * width, c)).mul_(ops.coef_2d_t).unsqueeze(0)
        z = torch.bmm(basis.expand(n, *basis.shape), x.view(n, height * width, c))
        return z * ops.coef_2d_t
    num_a = ops.basis_h.shape[0]
    rows = n * height
    basis_w = ops.basis_w_rows if n == 1 else ops.basis_w.expand(rows, num_a, width)
    # Contract W (a product per image row), then H.
    t = torch.bmm(basis_w, x.view(rows, width, c))  # (N*H, A, C)
    z = torch.bmm(ops.basis_h.expand(n, num_a, height), t.view(n, height, num_a * c))
    return z.view(n, num_a * num_a, c) * ops.coef_hwc  # (u, v) rows


def _synthesis_nhwc_(out: Tensor, coefficients: Tensor, ops: _Operators) -> None:
    """Add the basis expansion of ``coefficients`` (N, K, C) into NHWC ``out`` (in place)."""
    n, height, width, channels = out.shape
    if ops.basis_2d is not None:
        basis_t = ops.basis_2d_t
        if n == 1:
            out.view(height * width, channels).addmm_(basis_t, coefficients[0])
            return
        out.view(n, height * width, channels).baddbmm_(
            basis_t.expand(n, *basis_t.shape), coefficients
        )
        return
    num_a = ops.basis_h.shape[0]
    rows = n * height
    basis_w_t = ops.basis_w_t_rows if n == 1 else ops.basis_w.t().expand(rows, width, num_a)
    # Expand H (u), then W (v) row by row.
    s = torch.bmm(
        ops.basis_h_t.expand(n, height, num_a), coefficients.reshape(n, num_a, num_a * channels)
    )  # (N, H, A*O)
    out.view(rows, width, channels).baddbmm_(basis_w_t, s.view(rows, num_a, channels))


def _multiply_add(y: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``y + a @ b`` (batched), written into ``y`` (a fresh tensor of the caller's) to save
    an allocation of the feature map's size; out of place while tracing, for exporters."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return torch.baddbmm(y, a, b)
    return y.baddbmm_(a, b)
