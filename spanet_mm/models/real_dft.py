"""ExSPAM's spectral filter ``irfft2(rfft2(x) * gain)`` as exact real matrix products.

What ONNX export uses instead of ``torch.fft`` (docs/deployment.md says why): no DFT op and
no complex tensor, only ``MatMul``, ``Mul`` and the ops that build the bases, so the graph
runs in every runtime (ONNX Runtime, OpenVINO, TensorRT's parser).

For ``x`` of shape ``(..., H, W)`` and a real gain ``G`` of shape ``(..., H, K)`` with
``K = W // 2 + 1`` (not Hermitian along H: ExSPAM's learned gain is not), the orthonormal
``irfft2(rfft2(x) * G, s=(H, W))`` is computed as

1. the one-sided DFT along W: ``x @ [cos | -sin]`` (``W x K`` each), giving the real and
   imaginary parts stacked along H, ``[Xr; Xi]`` (``2H x K``);
2. the complex DFT along H as one real product with the ``2H x 2H`` block matrix
   ``F = [[C, S], [-S, C]]`` (``C``, ``S``: cosines and sines of ``2 pi h h' / H``);
3. the gain, with the c2r weights along W folded in (``alpha_k = 1`` for the zero bin and,
   for even W, the Nyquist bin, 2 otherwise) and both orthonormal scalings (``1 / (H W)``);
4. the inverse DFT along H, the product with ``F^T``;
5. the c2r transform along W, ``Yr @ cos^T - Yi @ sin^T``.

``irfft`` ignores the imaginary parts of the zero and Nyquist bins; with sines of exactly
``0`` there, step 5 does too. ``sin(0)`` is exact in float arithmetic but ``sin(pi)`` is not,
so the Nyquist sines are masked. The angles are ``2 pi (k n mod N) / N`` with ``k n mod N``
taken in integers first: float32 angles up to ``2 pi N`` would lose the digits that matter.

W is contracted first: ``4 H W K + 8 H^2 K`` multiply-adds per channel, against
``4 H^2 W + 8 H W K`` the other way round. The bases are built from the sizes of ``x`` with
``arange``, ``cos`` and ``sin``, so that an exported graph serves every size.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor


class RealDFTBases(NamedTuple):
    """The operators of :func:`filter_spectrum` for one ``H x W`` map."""

    forward_w: Tensor  # (2, W, K): x @ forward_w[0] = Re rfft(x), x @ forward_w[1] = Im
    dft_h: Tensor  # (2H, 2H): the DFT along H of [re; im] rows
    inverse_w: Tensor  # (2, K, W): c2r along W of [re; im] (without alpha)
    alpha: Tensor  # (K,): the c2r weights along W


def angle_tables(rows: int, cols: int, size: int, dtype: torch.dtype, device=None):
    """``cos`` and ``sin`` of ``2 pi (i j mod size) / size`` for ``i < rows``, ``j < cols``.

    Args:
        rows (int): Number of rows (may be a symbolic size while exporting).
        cols (int): Number of columns.
        size (int): The transform length ``N``.
        dtype (torch.dtype): Dtype of the tables.
        device (torch.device, optional): Where to build them.

    Returns:
        tuple[Tensor, Tensor]: Both ``(rows, cols)``.
    """
    product = torch.arange(rows, device=device)[:, None] * torch.arange(cols, device=device)
    # The remainder written out: ``%`` of a symbolic size has no ONNX translation.
    product = product - (product // size) * size
    angle = product.to(dtype) * (2 * math.pi / size)
    return torch.cos(angle), torch.sin(angle)


def real_dft_bases(
    height: int, width: int, dtype: torch.dtype = torch.float32, device=None
) -> RealDFTBases:
    """The bases of :func:`filter_spectrum` for an ``height x width`` map.

    Args:
        height (int): ``H`` (may be symbolic).
        width (int): ``W`` (may be symbolic).
        dtype (torch.dtype): Dtype of the bases. Defaults to float32.
        device (torch.device, optional): Where to build them.
    """
    bins = width // 2 + 1
    cos_w, sin_w = angle_tables(width, bins, width, dtype, device)
    freqs = torch.arange(bins, device=device)
    # Nyquist bin (even W): its sine is exactly 0, which float sin(pi n) is not.
    not_nyquist = (2 * freqs != width).to(dtype)
    sin_w = sin_w * not_nyquist
    cos_h, sin_h = angle_tables(height, height, height, dtype, device)
    dft_h = torch.cat([torch.cat([cos_h, sin_h], 1), torch.cat([-sin_h, cos_h], 1)], 0)
    alpha = 2 - (freqs == 0).to(dtype) - (1 - not_nyquist)
    return RealDFTBases(
        forward_w=torch.stack([cos_w, -sin_w]),
        dft_h=dft_h,
        inverse_w=torch.stack([cos_w.t(), -sin_w.t()]),
        alpha=alpha,
    )


def filter_spectrum(x: Tensor, gain: Tensor) -> Tensor:
    """``irfft2(rfft2(x, norm='ortho') * gain, s=(H, W), norm='ortho')`` for real ``x``.

    Args:
        x (Tensor): ``(B, C, H, W)``, real.
        gain (Tensor): ``(C, H, W // 2 + 1)``, real (any values).

    Returns:
        Tensor: ``(B, C, H, W)``, in the dtype of ``x`` (compute in float32 for float32
        rounding).
    """
    batch, channels, height, width = x.shape
    bins = width // 2 + 1
    bases = real_dft_bases(height, width, x.dtype, x.device)
    # alpha and the orthonormal scalings folded into the gain, repeated for the [re; im] rows.
    weighted = gain.to(x.dtype) * (bases.alpha / (height * width))
    weighted = torch.cat([weighted, weighted], dim=1)
    spectrum = matmul(x.unsqueeze(2), bases.forward_w)  # (B, C, 2, H, K)
    spectrum = matmul(bases.dft_h, spectrum.reshape(batch, channels, 2 * height, bins))
    spectrum = matmul(bases.dft_h.t(), spectrum * weighted)
    out = matmul(spectrum.reshape(batch, channels, 2, height, bins), bases.inverse_w)
    return out.sum(2)


def filter_spectrum_macs(height: int, width: int) -> int:
    """Multiply-adds of :func:`filter_spectrum` per channel of an ``height x width`` map."""
    bins = width // 2 + 1
    return 4 * height * width * bins + 8 * height * height * bins


# PyTorch's bicubic kernel coefficient (Keys' cubic convolution with a = -0.75).
CUBIC_A = -0.75


def bicubic_matrix(out: int, size: int, dtype: torch.dtype = torch.float32, device=None):
    """``(out, size)``: row ``i`` holds the weights of PyTorch's bicubic interpolation with
    ``align_corners=True`` for output position ``i`` (taps clamped at the borders, as
    ``F.interpolate`` reads them), so that ``M_h @ f @ M_w^T`` is
    ``F.interpolate(f[None], (out_h, out_w), mode='bicubic', align_corners=True)[0]``.

    What ONNX export records for ExSPAM's gain instead of a ``Resize`` op: two small products
    whose matrices are built from the (symbolic) output size, which the runtimes compute far
    faster than their cubic ``Resize`` kernels.

    Args:
        out (int): Output length (may be symbolic while exporting).
        size (int): Input length.
        dtype (torch.dtype): Dtype of the matrix. Defaults to float32.
        device (torch.device, optional): Where to build it.
    """
    index = torch.arange(out, device=device)
    # align_corners: position = i (size - 1) / (out - 1), and 0 for a single output; the
    # denominator as a tensor (out - 1 clamped to 1), so that no branch reads the size.
    denominator = index[-1:].clamp(min=1).to(dtype)
    # A true division, as F.interpolate computes its scale (``number / tensor`` would
    # multiply by the reciprocal, which is not exact).
    scale = torch.full_like(denominator, size - 1) / denominator
    position = index.to(dtype) * scale
    start = torch.floor(position)
    t = position - start
    a = CUBIC_A
    near = t  # distance to the tap at start (and 1 - t to the one after it)
    far = 1 - t
    weights = [
        ((a * (near + 1) - 5 * a) * (near + 1) + 8 * a) * (near + 1) - 4 * a,
        ((a + 2) * near - (a + 3)) * near * near + 1,
        ((a + 2) * far - (a + 3)) * far * far + 1,
        ((a * (far + 1) - 5 * a) * (far + 1) + 8 * a) * (far + 1) - 4 * a,
    ]
    columns = torch.arange(size, device=device)[None, :]
    first = start.to(torch.int64)
    matrix = 0
    for k, weight in enumerate(weights):
        tap = (first + (k - 1)).clamp(0, size - 1)
        matrix = matrix + (columns == tap[:, None]).to(dtype) * weight[:, None]
    return matrix


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``torch.matmul`` with the operand of lower rank given leading dims of size 1 first:
    OpenVINO's CPU plugin refuses a MatMul whose inputs differ in rank."""
    while a.dim() < b.dim():
        a = a.unsqueeze(0)
    while b.dim() < a.dim():
        b = b.unsqueeze(0)
    return torch.matmul(a, b)


def resize_bicubic(weight: Tensor, size) -> Tensor:
    """``F.interpolate(weight[None], size, mode='bicubic', align_corners=True)[0]`` of a
    ``(C, h, w)`` tensor as two products with :func:`bicubic_matrix` matrices."""
    rows = bicubic_matrix(size[0], weight.shape[-2], weight.dtype, weight.device)
    cols = bicubic_matrix(size[1], weight.shape[-1], weight.dtype, weight.device)
    # The stored gain (a constant in an exported graph) stays the left operand: OpenVINO
    # turns a product with a constant right operand into a FullyConnected node, which then
    # refuses the size-dependent rows.
    transposed = matmul(weight.transpose(-1, -2), rows.t())  # (C, w, H)
    return matmul(cols, transposed).transpose(-1, -2)
