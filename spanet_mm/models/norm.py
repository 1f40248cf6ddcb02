"""GroupNorm with one group, fast on GPUs too.

MetaFormer-style backbones normalise each sample over all of (C, H, W) and then apply a
per-channel affine: ``nn.GroupNorm(1, C)``. On CUDA, torch's GroupNorm kernel computes each
(sample, group) row's moments in a single thread block, so with one group a whole feature map
is reduced by one block, which leaves most of a large GPU idle and makes that kernel the
slowest of the forward at detection sizes (docs/implementation.md). Off the CPU,
:class:`OneGroupNorm` takes its statistics with ``torch.var_mean``, a reduction that spreads
over the whole device, normalises in one pass over the data, and has a backward of its own
that saves only the input and two numbers per sample, as GroupNorm's does. On the CPU it is
``nn.GroupNorm`` (whose kernel has a channels-last path and parallelises well).
"""

from contextlib import nullcontext
from typing import Optional, Tuple

import torch
from torch import Tensor, nn


class OneGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm(1, num_channels)``: the same function, parameters and state_dict
    entries (``weight``, ``bias``), and still a ``GroupNorm`` for optimiser settings such as
    ``norm_decay_mult``; off the CPU computed by :func:`one_group_norm`.

    Args:
        num_channels (int): Number of channels.
        eps (float): Added to the variance. Defaults to 1e-5.
        affine (bool): Whether to learn a per-channel scale and shift. Defaults to True.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(1, num_channels, eps, affine)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == 'cpu' or torch.jit.is_tracing() or torch.compiler.is_compiling():
            # Exporters and compilers see the standard operator (ONNX has GroupNorm; the
            # compilers write their own reductions).
            return super().forward(x)
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f'OneGroupNorm expects (N, {self.num_channels}, ...) input, got {tuple(x.shape)}'
            )
        return one_group_norm(x, self.weight, self.bias, self.eps)


def one_group_norm(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> Tensor:
    """GroupNorm with one group of ``x`` (N, C, ...), statistics in float32; ``weight`` and
    ``bias`` (C, ) both or neither.

    Under autocast the result is float32, as autocast runs GroupNorm in float32; otherwise it
    has the dtype of ``x``.
    """
    autocast = torch.is_autocast_enabled(x.device.type)
    with torch.autocast(x.device.type, enabled=False) if autocast else nullcontext():
        y = _OneGroupNorm.apply(x.float(), _float(weight), _float(bias), eps)
    return y if autocast else y.to(x.dtype)


def _float(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.float()


def _channel_view(t: Tensor, dims: int) -> Tensor:
    return t.view(1, -1, *([1] * (dims - 2)))


class _OneGroupNorm(torch.autograd.Function):
    """Forward with a device-wide reduction; backward from the saved input and per-sample
    mean and inverse standard deviation (the normalised input is recomputed)."""

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
    ) -> Tensor:
        sample_dims = tuple(range(1, x.dim()))
        var, mean = torch.var_mean(x, dim=sample_dims, correction=0, keepdim=True)
        rstd = torch.rsqrt(var + eps)
        # One pass over the data, y = x * scale + shift, with a scale and a shift per sample
        # and channel (as torch's CPU GroupNorm kernel computes it), rather than three
        # (subtract, scale, affine): the pass over the data is what costs on a GPU.
        if weight is None:
            scale = rstd
            shift = -mean * rstd
        else:  # affine: a weight and a bias, as nn.GroupNorm has
            scale = rstd * _channel_view(weight, x.dim())
            shift = torch.addcmul(_channel_view(bias, x.dim()), mean, scale, value=-1)
        ctx.save_for_backward(x, weight, mean, rstd)
        return torch.addcmul(shift, x, scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight, mean, rstd = ctx.saved_tensors
        sample_dims = tuple(range(1, x.dim()))
        channel_sums = (0, *range(2, x.dim()))  # over everything but the channels
        x_hat = (x - mean) * rstd
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            g = grad if weight is None else grad * _channel_view(weight, x.dim())
            grad_x = rstd * (
                g
                - g.mean(sample_dims, keepdim=True)
                - x_hat * (g * x_hat).mean(sample_dims, keepdim=True)
            )
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (grad * x_hat).sum(channel_sums)
        if weight is not None and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(channel_sums)
        return grad_x, grad_weight, grad_bias, None
