"""SPAM: Spectral Pooling Aggregation Modulation, the token mixer of SPANet (Section 4.2)."""

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear import add_residual, pointwise_linear, runs_fused, to_working_dtype, working_dtype
from .spectral_filter import SpectralPoolingFilter


def chunk_sizes(channels: int, chunks: int) -> List[int]:
    """Channel counts ``torch.chunk`` gives when splitting ``channels`` into ``chunks``."""
    return [part.numel() for part in torch.empty(channels).chunk(chunks)]


# -- point-wise layers on channels-last data ---------------------------------------------------
#
# The 1x1 convs keep their (out, in, 1, 1) parameters (the checkpoint layout) and run as
# matrix products on the NHWC view of channels-last data, the way ConvNeXt runs its
# point-wise layers. Without autograd (inference) on CPU they run as oneDNN's fused linear
# kernel (spanet_mm.models.linear, shared with SPANetV2); with autograd as 1x1 convs on the
# channels-last data (also oneDNN) and the GELU separately.


def fused_inference(x: Tensor) -> bool:
    """Whether the point-wise layers of ``x`` (channels-last, NCHW) can run as oneDNN's
    fused inference kernels: CPU data, nothing for autograd to record, not being traced or
    compiled (torch.compile picks its own kernels)."""
    return runs_fused(x) and is_channels_last(x)


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` (N, C, H, W) is laid out channels-last, i.e. its NHWC view is
    contiguous (1x1 maps count as both layouts)."""
    return x.permute(0, 2, 3, 1).is_contiguous()


def nhwc(x: Tensor) -> Tensor:
    """The contiguous (N, H, W, C) view of channels-last (N, C, H, W) data (a copy for other
    layouts)."""
    return x.permute(0, 2, 3, 1).contiguous()


def branch_input(x: Tensor, fused: bool) -> Tensor:
    """The contiguous NHWC view of channels-last ``x``, in the working dtype when the
    point-wise layers run as oneDNN's kernels (which take a single dtype)."""
    return nhwc(to_working_dtype(x) if fused else x)


def forward_on_nhwc(forward_nhwc: Callable[[Tensor, bool], Tensor], x: Tensor) -> Tensor:
    """A branch's ``forward_nhwc(x, fused)`` applied to channels-last CPU data ``x``
    (N, C, H, W); the result is channels-last NCHW again."""
    fused = fused_inference(x)
    return forward_nhwc(branch_input(x, fused), fused).permute(0, 3, 1, 2)


def conv1x1_nhwc(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``x @ weight.T + bias`` of NHWC data as a 1x1 conv of its channels-last NCHW view
    (autograd and autocast aware); the result is NHWC and contiguous."""
    weight = weight.view(weight.shape[0], -1, 1, 1)
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias).permute(0, 2, 3, 1).contiguous()


def pointwise(
    conv: nn.Conv2d,
    x: Tensor,
    fused: bool,
    activation: str = 'none',
    residual: Optional[Tensor] = None,
    residual_scale: Optional[Tensor] = None,
) -> Tensor:
    """A 1x1 conv module (and optionally GELU) applied to NHWC data ``x``, plus
    ``residual * residual_scale`` if a residual (NHWC) is given."""
    if fused:
        return pointwise_linear(x, conv.weight, conv.bias, activation, residual, residual_scale)
    y = conv1x1_nhwc(x, conv.weight, conv.bias)
    return add_residual(F.gelu(y) if activation == 'gelu' else y, residual, residual_scale)


def is_observed(module: nn.Module) -> bool:
    """Whether hooks watch ``module``'s calls (analysis tools hook the filter); then it must
    be called as a module rather than through its NHWC method."""
    hooks = nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or getattr(hooks, '_global_forward_hooks', None)
        or getattr(hooks, '_global_forward_pre_hooks', None)
    )


class SPAM(nn.Module):
    """Spectral Pooling Aggregation Modulation.

    ``query = dw_kx1(dw_1xk(proj_in(x)))``; the query is split into one channel chunk per
    balance, each chunk goes through its Spectral Pooling Gate (SPF then a 1x1 conv to all
    channels), the gates are summed into the context, and ``proj_out(query * context)`` is
    returned.

    The gates are computed as one filter over all channels (with the balance of each
    channel's chunk) followed by one 1x1 conv whose weight is the three gates' weights side by
    side: the same sum, with a single pass over the data. The three convs stay separate
    modules (``context_convs``) so the parameters keep the paper's and the release's layout.
    On channels-last data the point-wise layers run as matrix products on the NHWC view and
    the filter runs on that view too (:meth:`SpectralPoolingFilter.filter_nhwc`), all in the
    working dtype (bfloat16 under autocast); when hooks watch the filter (analysis tools) it
    is called as a module instead.

    Args:
        embed_dims (int): Number of channels.
        radius (float): Radius of the SPF low-frequency disk.
        balances (Sequence[float]): One balance per gate. Defaults to (0.7, 0.8, 0.9).
        kernel_size (int): Size ``k`` of the separable depth-wise ``1xk``/``kx1`` convs.
            Defaults to 7.
    """

    def __init__(
        self,
        embed_dims: int,
        radius: float,
        balances: Sequence[float] = (0.7, 0.8, 0.9),
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        sizes = chunk_sizes(embed_dims, len(balances))
        if len(sizes) != len(balances):
            raise ValueError(
                f'SPAM splits {embed_dims} channels into one chunk per balance, but '
                f'torch.chunk gives {len(sizes)} chunks for {len(balances)} balances '
                f'{tuple(balances)}; use more channels or fewer balances'
            )
        self.embed_dims = embed_dims
        self.balances = tuple(float(b) for b in balances)
        self.chunk_sizes = tuple(sizes)

        self.proj_in = nn.Conv2d(embed_dims, embed_dims, 1)
        self.dwconv = nn.Sequential(
            nn.Conv2d(
                embed_dims,
                embed_dims,
                (1, kernel_size),
                padding=(0, kernel_size // 2),
                groups=embed_dims,
            ),
            nn.Conv2d(
                embed_dims,
                embed_dims,
                (kernel_size, 1),
                padding=(kernel_size // 2, 0),
                groups=embed_dims,
            ),
        )
        channel_balances = [b for b, n in zip(self.balances, sizes) for _ in range(n)]
        self.spectral_filter = SpectralPoolingFilter(radius, channel_balances)
        self.context_convs = nn.ModuleList(nn.Conv2d(n, embed_dims, 1) for n in sizes)
        self.proj_out = nn.Conv2d(embed_dims, embed_dims, 1)

    def forward(self, x: Tensor) -> Tensor:
        if not is_channels_last(x) or x.device.type != 'cpu':
            query = self.dwconv(self.proj_in(x))
            return self.proj_out(query * self.context(query))
        return forward_on_nhwc(self.forward_nhwc, x)

    def forward_nhwc(
        self,
        x: Tensor,
        fused: bool,
        residual: Optional[Tensor] = None,
        residual_scale: Optional[Tensor] = None,
    ) -> Tensor:
        """SPAM of NHWC data (contiguous), as NHWC data, plus ``residual * residual_scale``
        if a residual (NHWC) is given: the block's residual sum comes out of ``proj_out``'s
        kernel where the dtypes allow.

        Args:
            x (Tensor): ``(N, H, W, C)``, contiguous; in the working dtype if ``fused``.
            fused (bool): Whether the point-wise layers run as oneDNN's inference kernels
                (:func:`fused_inference` of the data).
            residual (Tensor, optional): ``(N, H, W, C)``.
            residual_scale (Tensor, optional): ``(C, )``.
        """
        # The depth-wise convs take the channels-last NCHW view and keep that layout.
        query = nhwc(self.dwconv(pointwise(self.proj_in, x, fused).permute(0, 3, 1, 2)))
        context = self._context_nhwc(query, fused)
        return pointwise(
            self.proj_out, query * context, fused, residual=residual, residual_scale=residual_scale
        )

    def context_weight(self, dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
        """The three gates' 1x1 convs as one: weight (C, C, 1, 1) and bias (C,).

        Built from the parameters at every call: they may change between calls (optimiser
        steps, EMA updates through ``.data``) without any version a cache could check.

        Args:
            dtype (torch.dtype, optional): The weight's dtype, if not the parameters'
                (written by the concatenation itself, without autograd: inference only).
        """
        weights = [conv.weight for conv in self.context_convs]
        if dtype is None or dtype == weights[0].dtype:
            weight = torch.cat(weights, dim=1)
        else:
            shape = (weights[0].shape[0], self.embed_dims, *weights[0].shape[2:])
            weight = torch.cat(weights, dim=1, out=weights[0].new_empty(shape, dtype=dtype))
        bias = torch.stack([conv.bias for conv in self.context_convs]).sum(0)
        return weight, bias

    def context(self, query: Tensor) -> Tensor:
        """The aggregated context: the sum of all Spectral Pooling Gates."""
        weight, bias = self.context_weight()
        return F.conv2d(self.spectral_filter(query), weight, bias)

    def _context_nhwc(self, query: Tensor, fused: bool) -> Tensor:
        """:meth:`context` of NHWC data, as NHWC data."""
        weight, bias = self.context_weight(working_dtype(query) if fused else None)
        if (
            type(self.spectral_filter) is SpectralPoolingFilter
            and not is_observed(self.spectral_filter)
            and not torch.jit.is_tracing()
        ):
            filtered = self.spectral_filter.filter_nhwc(query)
        else:
            filtered = nhwc(self.spectral_filter(query.permute(0, 3, 1, 2)))
        return (
            pointwise_linear(filtered, weight, bias)
            if fused
            else conv1x1_nhwc(filtered, weight, bias)
        )

    def gate_outputs(self, query: Tensor) -> List[Tensor]:
        """Each Spectral Pooling Gate's output separately (for analysis; they sum to
        :meth:`context`)."""
        filtered = self.spectral_filter(query).split(self.chunk_sizes, dim=1)
        return [conv(part) for conv, part in zip(self.context_convs, filtered)]
