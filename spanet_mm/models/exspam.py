"""ExSPAM, the spectral token mixer of SPANetV2 (TPAMI 2026).

ExSPAM works on channels-last tensors ``(B, H, W, C)``. Its context path splits ``ctx(x)``
into ``num_heads`` contiguous channel groups ("heads"); head ``i`` goes through a depth-wise
``(3 + 2 i)``-sized conv and then through a learned spectral gain: ``irfft2(rfft2(y) *
sigmoid(filter_i))`` (orthonormal, in float32). The heads are interleaved (output channel
``j * num_heads + i`` is channel ``j`` of head ``i``) and mixed by ``proj``; the result
modulates ``query(x)``.

Each ``filter_i`` is stored for the stage's feature size at the 224 x 224 training input
(``(head_dims, H0, W0 // 2 + 1)``); at any other size the release resizes it bicubically
(``align_corners=True``) to ``(H, W // 2 + 1)`` on every call, which is how every downstream
model of the authors was trained, so it is done here too.

How it is computed here (the same function as the authors' per-head loop):

- the four heads' depth-wise outputs are interleaved *before* the transform (the copy the
  release makes afterwards anyway), so a single ``rfft2``/``irfft2`` pair covers all
  channels and its contiguous NCHW output feeds ``proj`` directly; on small maps the four
  depth-wise convs run as one (kernels zero-padded to 9 x 9);
- the four filters form one gain tensor ``(C, H, W // 2 + 1)`` in the same interleaved
  order: one resize and one sigmoid for all heads;
- ``proj``'s two 1x1 convs run as matrix products (see :meth:`ExSPAM.project`);
- outside autograd (inference, validation) the gain is kept in a small per-module LRU cache
  keyed by feature size. A cached gain is only used while the filters still hold the values
  it was built from: the cache keeps a copy of them and compares it with the parameters on
  every call, because writes through ``param.data`` (MMEngine's EMA, weight swapping,
  ``load_state_dict``) change the values without telling autograd's version counters.

Export: ONNX has no DFT op that the runtimes run correctly at every size (docs/deployment.md),
so while a model is exported to ONNX (``torch.onnx.is_in_onnx_export()``, both of torch's
exporters) the filter is computed as exact real matrix products instead
(:func:`spanet_mm.models.real_dft.filter_spectrum`), and :func:`real_products` asks for the
same anywhere else (another exporter, or eager runs that check it). While exporting, the
gain is resized inside the graph and the heads' depth-wise convs run as four convs whose
results are stacked: no branch on the feature size, which stays symbolic. The gain's bicubic
resize is recorded as two products with interpolation matrices built in the graph
(:func:`~spanet_mm.models.real_dft.resize_bicubic`), the same values as ``F.interpolate``.
"""

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import ContextManager, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import LRUCache
from .linear import pointwise_linear
from .norm import OneGroupNorm
from .real_dft import filter_spectrum, resize_bicubic

# Set by real_products(): compute the spectral filter as real products outside ONNX export.
_REAL_PRODUCTS: ContextVar[bool] = ContextVar('exspam_real_products', default=False)


@contextmanager
def real_products(enabled: bool = True) -> Iterator[None]:
    """Compute ExSPAM's spectral filter as exact real matrix products (no ``torch.fft``,
    no complex tensor) while the context is open, as ONNX export always does.

    For exporters other than ``torch.onnx`` (``torch.export`` for a runtime without FFT ops,
    ``openvino.convert_model``) and for checking the products in eager mode. The result is
    the same function to float32 rounding; the FFT is faster in PyTorch.

    Args:
        enabled (bool): Whether to use the products. Defaults to True.
    """
    token = _REAL_PRODUCTS.set(enabled)
    try:
        yield
    finally:
        _REAL_PRODUCTS.reset(token)


def uses_real_products() -> bool:
    """Whether ExSPAM computes its filter as real products now: inside :func:`real_products`
    or while exporting to ONNX."""
    if torch.onnx.is_in_onnx_export():
        return True
    # TorchDynamo cannot trace a ContextVar read: a compiled model keeps the FFT path.
    if torch.compiler.is_compiling():
        return False
    return _REAL_PRODUCTS.get()


def resize_filter(weight: Tensor, size: Tuple[int, int]) -> Tensor:
    """Resize a ``(channels, h, w)`` filter to ``size`` the way the release does (bicubic,
    ``align_corners=True``), or return it unchanged when it already has that size.

    While tracing, the resize is always recorded (to the same size it is the identity:
    the bicubic weights are exactly 0, 1, 0, 0), so that a traced or exported model also
    resizes at other sizes. With the real products (ONNX export, :func:`real_products`) it
    is computed as two products with interpolation matrices built from the size
    (:func:`~spanet_mm.models.real_dft.resize_bicubic`): the same values, and no cubic
    ``Resize`` op, which ONNX Runtime runs slowly."""
    # _tracing() first: comparing symbolic sizes would add guards to an exported graph.
    if not _tracing() and tuple(weight.shape[-2:]) == tuple(size):
        return weight
    if uses_real_products():
        return resize_bicubic(weight, size)
    return F.interpolate(weight[None], size=size, mode='bicubic', align_corners=True)[0]


def _without_autocast(device_type: str) -> ContextManager:
    """A region without autocast; no region at all where autocast is off already (an
    exporter records a region as a higher-order op, which costs it time to trace)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()


def _exporting() -> bool:
    """Whether the forward pass is being recorded for export (``torch.jit.trace``, either
    ONNX exporter, ``torch.export``): sizes may be symbolic, so no branch may depend on
    them."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    return torch.compiler.is_exporting()


def _tracing() -> bool:
    """Whether the forward pass is being traced, exported or compiled (no Python-side
    caching then: the check of the cache's validity is a data-dependent branch)."""
    return _exporting() or torch.jit.is_scripting() or torch.compiler.is_compiling()


class ExSPAM(nn.Module):
    """Expanded Spectral Pooling Aggregation Modulation (ExSPAM).

    Parameter names are the release's (``query.0``, ``ctx``, ``local_conv_{i}``,
    ``filter_{i}``, ``proj.{0,1,3}``, ``proj_out``), so the authors' weights load unchanged.

    Args:
        embed_dims (int): Number of channels ``C``; must be divisible by ``num_heads``.
        filter_size (Sequence[int]): Feature size ``(H0, W0)`` the filters are stored for
            (the stage's size at the training input: 56 x 56 at stride 4 for 224 x 224).
        num_heads (int): Number of heads; head ``i`` has a depth-wise kernel of size
            ``3 + 2 i``. Defaults to 4.
        expand_ratio (int): Width of ``proj``'s hidden layer relative to ``C``.
            Defaults to 2.
        cache_size (int): Feature sizes whose spectral gain is kept for calls outside
            autograd (each holds a (C, H, W // 2 + 1) float32 gain). Defaults to 2.
    """

    # Speed setting only (the result is the same): feature maps with fewer positions run the
    # heads' depth-wise convs as one conv (see local_context).
    single_conv_max_area: int = 1024

    def __init__(
        self,
        embed_dims: int,
        filter_size: Union[int, Sequence[int]] = (14, 14),
        num_heads: int = 4,
        expand_ratio: int = 2,
        cache_size: int = 2,
    ) -> None:
        super().__init__()
        if num_heads < 1 or embed_dims % num_heads:
            raise ValueError(
                f'ExSPAM needs embed_dims divisible by num_heads, got '
                f'embed_dims={embed_dims}, num_heads={num_heads}'
            )
        if isinstance(filter_size, int):
            filter_size = (filter_size, filter_size)
        height, width = (int(s) for s in filter_size)
        if height < 1 or width < 1:
            raise ValueError(f'ExSPAM filter_size must be positive, got {tuple(filter_size)}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        # The stored filters' spectrum size: (H0, W0 // 2 + 1).
        self.filter_shape = (height, width // 2 + 1)

        self.query = nn.Sequential(nn.Linear(embed_dims, embed_dims, bias=False), nn.GELU())
        self.ctx = nn.Linear(embed_dims, embed_dims, bias=False)
        for i in range(num_heads):
            kernel = 3 + 2 * i
            self.add_module(
                f'local_conv_{i + 1}',
                nn.Conv2d(
                    self.head_dims,
                    self.head_dims,
                    kernel,
                    padding=kernel // 2,
                    groups=self.head_dims,
                ),
            )
            self.register_parameter(
                f'filter_{i + 1}',
                nn.Parameter(torch.randn(self.head_dims, *self.filter_shape) * 0.02),
            )
        hidden = embed_dims * expand_ratio
        # Group j of the first conv sees channel j of every head (the interleaved order).
        self.proj = nn.Sequential(
            nn.Conv2d(embed_dims, hidden, 1, groups=self.head_dims, bias=False),
            OneGroupNorm(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, embed_dims, 1, bias=False),
        )
        self.proj_out = nn.Linear(embed_dims, embed_dims, bias=False)

        self._gain_cache: LRUCache[Tensor] = LRUCache(cache_size)
        self._gain_source: Optional[List[Tensor]] = None

    @property
    def local_convs(self) -> List[nn.Conv2d]:
        return [getattr(self, f'local_conv_{i + 1}') for i in range(self.num_heads)]

    @property
    def filters(self) -> List[Tensor]:
        return [getattr(self, f'filter_{i + 1}') for i in range(self.num_heads)]

    # -- the spectral gain -------------------------------------------------------------------

    def spectral_gain(self, height: int, width: int) -> Tensor:
        """``sigmoid(filter)`` of all heads for an ``height x width`` feature map.

        Returns:
            Tensor: float32 ``(C, height, width // 2 + 1)``, channels in the interleaved
            order (``j * num_heads + i`` is channel ``j`` of head ``i``).
        """
        filters = self.filters
        if _tracing() or torch.is_grad_enabled() and any(f.requires_grad for f in filters):
            return self._build_gain(filters, height, width)
        if not self._gain_source_matches(filters):
            self._gain_cache.clear()
            self._gain_source = [f.detach().clone() for f in filters]
        key = (height, width, filters[0].device)
        return self._gain_cache.get_or_build(key, lambda: self._build_gain(filters, height, width))

    def _gain_source_matches(self, filters: List[Tensor]) -> bool:
        source = self._gain_source
        return source is not None and all(
            s.device == f.device and s.dtype == f.dtype and s.shape == f.shape and torch.equal(s, f)
            for s, f in zip(source, filters)
        )

    def _build_gain(self, filters: List[Tensor], height: int, width: int) -> Tensor:
        with _without_autocast(filters[0].device.type):
            # (head_dims, heads, h, w) -> (C, h, w): the interleaved channel order.
            weight = torch.stack(filters, dim=1).flatten(0, 1).float()
            return torch.sigmoid(resize_filter(weight, (height, width // 2 + 1)))

    # -- forward -----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Mix tokens of ``x`` (``(B, H, W, C)``); returns the same shape."""
        height, width = x.shape[1:3]
        query = pointwise_linear(x, self.query[0].weight, activation='gelu')
        mixed = self.local_context(pointwise_linear(x, self.ctx.weight))
        mixed = self.modulate_spectrum(mixed, self.spectral_gain(height, width))
        return pointwise_linear(query * self.project(mixed), self.proj_out.weight)

    def local_context(self, context: Tensor) -> Tensor:
        """The heads' depth-wise convs of ``context`` (``(B, H, W, C)``), interleaved:
        a contiguous ``(B, C, H, W)`` tensor whose channel ``j * heads + i`` is channel ``j``
        of head ``i``."""
        batch, height, width, channels = context.shape
        context = context.permute(0, 3, 1, 2)  # NCHW view of channels-last data
        if _exporting():
            # One graph for every size: no branch on it, no writes into slices.
            heads = [
                conv(context[:, i * self.head_dims : (i + 1) * self.head_dims])
                for i, conv in enumerate(self.local_convs)
            ]
            return torch.stack(heads, dim=2).reshape(batch, channels, height, width)
        if height * width < self.single_conv_max_area:
            # Small maps: per-call overhead dominates, so run the heads as one depth-wise
            # conv with their kernels zero-padded to the largest size (the padding adds
            # exact zeros), then interleave.
            size = 3 + 2 * (self.num_heads - 1)
            weight = torch.cat(
                [
                    F.pad(conv.weight, [(size - conv.weight.shape[-1]) // 2] * 4)
                    for conv in self.local_convs
                ]
            )
            bias = torch.cat([conv.bias for conv in self.local_convs])
            out = F.conv2d(context.contiguous(), weight, bias, padding=size // 2, groups=channels)
            return (
                out.view(batch, self.num_heads, self.head_dims, height, width)
                .transpose(1, 2)
                .reshape(batch, channels, height, width)
            )
        # Large maps: each head's conv on its channels-last slice, written into its place
        # in the interleaved NCHW result.
        out = context.new_empty(batch, self.head_dims, self.num_heads, height, width)
        for i, conv in enumerate(self.local_convs):
            out[:, :, i] = conv(context[:, i * self.head_dims : (i + 1) * self.head_dims])
        return out.view(batch, channels, height, width)

    def project(self, x: Tensor) -> Tensor:
        """``proj`` of the interleaved ``(B, C, H, W)`` tensor, returned as ``(B, H, W, C)``.

        Both 1x1 convs run as matrix products on the NCHW data: the grouped one as a
        batch of ``(expand_ratio * num_heads) x num_heads`` products (one per group: torch's
        grouped conv is several times slower at these shapes), the last one as
        ``hidden^T W^T``, which yields NHWC directly.
        """
        batch, channels, height, width = x.shape
        first, norm, act, last = self.proj
        groups = self.head_dims
        hidden = torch.matmul(
            first.weight.view(groups, -1, channels // groups),
            x.view(batch, groups, channels // groups, height * width),
        )
        hidden = act(norm(hidden.view(batch, -1, height * width)))
        out = torch.matmul(hidden.transpose(1, 2), last.weight.flatten(1).t())
        return out.view(batch, height, width, channels)

    @staticmethod
    def modulate_spectrum(x: Tensor, gain: Tensor) -> Tensor:
        """``irfft2(rfft2(x) * gain)`` over the last two dims (orthonormal), computed in
        float32 whatever the input dtype or autocast state; returns ``x``'s dtype.

        With the FFT, or as real products while exporting to ONNX or inside
        :func:`real_products`."""
        height, width = x.shape[-2:]
        with _without_autocast(x.device.type):
            if uses_real_products():
                return filter_spectrum(x.float(), gain.float()).to(x.dtype)
            spectrum = torch.fft.rfft2(x.float(), norm='ortho')
            # Real-times-complex as a real product on the (re, im) view: multiplying by
            # the float gain directly would first copy it into a complex tensor.
            spectrum = torch.view_as_complex(torch.view_as_real(spectrum) * gain[..., None])
            out = torch.fft.irfft2(spectrum, s=(height, width), norm='ortho')
        return out.to(x.dtype)
