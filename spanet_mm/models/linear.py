"""Point-wise (per-position) linear layers on channels-last data, for both generations.

SPANet's 1x1 convs and SPANetV2's ``nn.Linear`` layers are matrix products over the channel
dim of ``(..., C)`` data. Without autograd (inference, validation) on the CPU they run here
as oneDNN's inference kernel (``torch.ops.mkldnn._linear_pointwise``, the kernel that
torch.compile's CPU backend emits for linear layers), which also applies a following GELU in
the same pass and takes float32 and bfloat16 alike. ``torch.nn.functional.linear`` sends
float32 products to the BLAS library instead, which on some CPUs is much slower at these
shapes (docs/implementation.md). With autograd, while tracing or compiling, and on other
devices, the plain ``F.linear`` (and ``F.gelu``) run: the same function.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, '_linear_pointwise'
)
_ONEDNN_DTYPES = {torch.float32}
if _ONEDNN_LINEAR and torch.ops.mkldnn._is_mkldnn_bf16_supported():
    _ONEDNN_DTYPES.add(torch.bfloat16)

ACTIVATIONS = ('none', 'gelu')


def working_dtype(x: Tensor) -> torch.dtype:
    """The dtype matrix products of ``x`` run in: autocast's, or ``x``'s own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def to_working_dtype(x: Tensor) -> Tensor:
    """``x`` in :func:`working_dtype` (itself when it already is)."""
    dtype = working_dtype(x)
    return x if x.dtype == dtype else x.to(dtype)


def _as_dtype(x: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    # Skipping no-op casts saves dispatcher calls, which count between small products.
    return x if x is None or x.dtype == dtype else x.to(dtype)


def runs_fused(x: Tensor) -> bool:
    """Whether a point-wise layer of ``x`` runs as oneDNN's fused inference kernel: CPU data,
    nothing for autograd to record, not traced or compiled (tracers and torch.compile see
    the plain ops), a dtype oneDNN takes."""
    return (
        _ONEDNN_LINEAR
        and x.device.type == 'cpu'
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and working_dtype(x) in _ONEDNN_DTYPES
    )


def pointwise_linear(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    activation: str = 'none',
    residual: Optional[Tensor] = None,
    residual_scale: Optional[Tensor] = None,
) -> Tensor:
    """``activation(x @ weight.T + bias)`` over the last dim of ``x``, plus
    ``residual * residual_scale`` if a residual is given.

    Args:
        x (Tensor): ``(..., C_in)`` data, contiguous in its last dim.
        weight (Tensor): ``(C_out, C_in)``, or a 1x1 conv's ``(C_out, C_in, 1, 1)``.
        bias (Tensor, optional): ``(C_out, )``.
        activation (str): ``'none'`` or ``'gelu'`` (the exact, erf form).
        residual (Tensor, optional): ``(..., C_out)``, added to the result (a residual
            stream). Where it has the working dtype it is added inside oneDNN's kernel;
            otherwise the sum has the dtype the two promote to (float32 for a float32
            residual stream under bfloat16 autocast).
        residual_scale (Tensor, optional): ``(C_out, )``, multiplies ``residual`` first
            (ResScale).

    Returns:
        Tensor: ``(..., C_out)``, in the working dtype (autocast's, if it is on), or the
        promoted dtype of the sum with ``residual``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}')
    weight = weight.reshape(weight.shape[0], -1)
    if runs_fused(x):
        dtype = working_dtype(x)
        x, weight = _as_dtype(x, dtype), _as_dtype(weight, dtype)
        if dtype == torch.float32:
            bias = _as_dtype(bias, dtype)
        # else: oneDNN adds a float32 bias to bfloat16 products itself (more precisely than a
        # bfloat16 copy would, and one cast per layer fewer).
        if (
            residual is not None
            and activation == 'none'
            and residual.dtype == dtype
            and (residual_scale is None or residual_scale.dtype == dtype)
        ):
            other = residual if residual_scale is None else residual * residual_scale
            # (the fused sum wants a bias of the working dtype)
            return torch.ops.mkldnn._linear_pointwise.binary(
                x, other, weight, _as_dtype(bias, dtype), 'add'
            )
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], 'none')
    else:
        y = F.linear(x, weight, bias)
        if activation == 'gelu':
            y = F.gelu(y)
    return add_residual(y, residual, residual_scale)


def add_residual(
    y: Tensor, residual: Optional[Tensor] = None, scale: Optional[Tensor] = None
) -> Tensor:
    """``y + residual * scale`` (one kernel), ``y + residual``, or ``y`` alone, in the dtype
    the operands promote to."""
    if residual is None:
        return y
    if scale is None:
        return residual + y
    return torch.addcmul(y, residual, scale)
