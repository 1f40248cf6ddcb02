"""Parameters and FLOPs with MMEngine's fvcore port, and the spectral filter on its own.

Counting convention (fvcore's, used by the paper's tables): one multiply-add is one "FLOP"
(so the numbers are MACs), only the operators fvcore has handles for are counted
(convolutions, matmuls, linear layers, norms, ...) and element-wise products, activations and
FFTs are skipped. Added here: ``baddbmm``/``addbmm``/``addmm_``, matrix products fvcore lacks,
counted like its ``bmm``. The paper's SPANet computes its Spectral Pooling Filter (SPF) with
``torch.fft``, so its published FLOPs leave the filter out.

The SPF is therefore reported separately, per SPF module, found by type and measured by
hooks (its input shape) and by fvcore's per-module attribution (its cost as implemented),
never by reading its internals:

* ``fft_macs``: the paper's formulation, one forward and one inverse complex 2-D FFT of
  ``N = H * W`` points per channel (the textbook ``5 N log2 N`` real FLOPs each) plus the
  complex-by-real mask product (``2 N``): ``C * (10 N log2 N + 2 N)`` real FLOPs, halved to
  put it in MAC units like the rest;
* ``implemented_macs``: what fvcore counts inside the SPF modules of the model at hand (for
  spanet_mm's partial-DFT filter, its small matmuls; for the FFT reference model, zero).

The headline ``flops`` is fvcore's total minus ``implemented_macs``: the paper's convention,
the same for any implementation of the filter.
"""
import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from torch import Tensor, nn

from .common import capture, config_scope, modules_of_type

# Input (height, width) the paper's and the codebases' tables use by default.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1280), 'mmseg': (512, 512)}


def _product_flop_jit(inputs: list, outputs: list) -> int:
    """MACs of ``out = beta * input + alpha * (a @ b)`` (``baddbmm``, ``addmm_``): one per
    element of ``a`` and column of ``b``; the scaled addition is element-wise (not counted)."""
    from mmengine.analysis.jit_handles import get_shape
    a_shape, b_shape = get_shape(inputs[1]), get_shape(inputs[2])
    return math.prod(a_shape) * b_shape[-1]


# Matrix products that fvcore has no handle for, counted like its bmm/addmm.
EXTRA_OP_HANDLES = {
    'aten::baddbmm': _product_flop_jit,
    'aten::baddbmm_': _product_flop_jit,
    'aten::addbmm': _product_flop_jit,
    'aten::addmm_': _product_flop_jit,
}


def spectral_filter_types() -> Tuple[type, ...]:
    """Module classes that are a Spectral Pooling Filter (ours and the FFT reference)."""
    from spanet_mm.models.spectral_filter import SpectralPoolingFilter
    from spanet_mm.reference import ReferenceSPF
    return (SpectralPoolingFilter, ReferenceSPF)


def fft_filter_flops(channels: int, height: int, width: int) -> float:
    """Real FLOPs of one SPF call in the paper's FFT formulation, per image.

    ``channels * (2 * 5 N log2 N + 2 N)`` with ``N = height * width``: a forward and an
    inverse complex 2-D FFT per channel and the mask product; the ``fftshift`` rolls move
    data and cost no arithmetic.
    """
    points = height * width
    if points <= 1:
        return 0.0
    return channels * (10 * points * math.log2(points) + 2 * points)


@dataclass
class SpectralFilterCall:
    """One SPF call seen during the count."""
    name: str
    channels: int
    height: int
    width: int
    batch: int
    implemented_macs: int = 0

    @property
    def fft_macs(self) -> float:
        return self.batch * fft_filter_flops(self.channels, self.height, self.width) / 2


@dataclass
class Complexity:
    """What :func:`count_complexity` measured.

    Attributes:
        params (int): Number of parameters.
        fvcore_total (int): fvcore's total, with the SPF as implemented in the model.
        spectral (list[SpectralFilterCall]): One entry per SPF call.
        unsupported_ops (dict): Operators fvcore skipped, with how often they ran.
        analyzer (FlopAnalyzer): For per-module tables.
    """
    params: int
    fvcore_total: int
    spectral: List[SpectralFilterCall] = field(default_factory=list)
    unsupported_ops: Dict[str, int] = field(default_factory=dict)
    analyzer: Optional[FlopAnalyzer] = None

    @property
    def implemented_macs(self) -> int:
        """fvcore's count inside the SPF modules (the filter as implemented)."""
        return sum(call.implemented_macs for call in self.spectral)

    @property
    def fft_macs(self) -> float:
        """The SPF in the paper's FFT formulation, in MAC units (real FLOPs / 2)."""
        return sum(call.fft_macs for call in self.spectral)

    @property
    def flops(self) -> int:
        """Headline count: everything but the SPF (the paper's fvcore convention)."""
        return self.fvcore_total - self.implemented_macs


def count_complexity(model: nn.Module, inputs: Tuple) -> Complexity:
    """Count parameters and FLOPs (MACs) of ``model(*inputs)`` with MMEngine's fvcore port.

    Args:
        model (nn.Module): The model; put it in eval mode first.
        inputs (tuple): Positional inputs of its forward.

    Returns:
        Complexity: The counts, with the spectral filter's calls listed separately.
    """
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**EXTRA_OP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    spf_modules = modules_of_type(model, spectral_filter_types())

    def record(module, args, out):
        x = args[0]
        return tuple(int(s) for s in x.shape)

    # fvcore traces with torch.jit.trace; its tracer warnings (Python control flow on
    # shapes) say nothing about the counts.
    with warnings.catch_warnings(), capture(spf_modules, record) as shapes:
        warnings.simplefilter('ignore')
        total = analyzer.total()
    by_module = analyzer.by_module()
    calls = []
    for name, _ in spf_modules:
        for shape in shapes[name]:
            if len(shape) != 4:
                raise ValueError(f'{name}: a spectral filter expects (N, C, H, W) input, '
                                 f'got shape {shape}')
            calls.append(
                SpectralFilterCall(name, channels=shape[1], height=shape[2], width=shape[3],
                                   batch=shape[0],
                                   implemented_macs=by_module.get(name, 0) // len(shapes[name])))
    return Complexity(
        params=parameter_count(model)[''],
        fvcore_total=total,
        spectral=calls,
        unsupported_ops=dict(analyzer.unsupported_ops()),
        analyzer=analyzer)


class TensorModeWrapper(nn.Module):
    """``forward(x)`` runs an OpenMMLab model's ``mode='tensor'`` path (no post-processing)
    with the meta information a real batch would carry, so that tracers can call it."""

    def __init__(self, model: nn.Module, data_samples: Optional[list] = None) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, x: Tensor):
        return self.model(x, self.data_samples, mode='tensor')


def _data_samples(scope: str, height: int, width: int, batch: int) -> Optional[list]:
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), batch_input_shape=(height, width),
                scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta) for _ in range(batch)]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta) for _ in range(batch)]
    return None


def countable(model: nn.Module, scope: Optional[str], shape: Sequence[int],
              in_channels: int = 3, batch: int = 1) -> Tuple[nn.Module, Tuple[Tensor]]:
    """The module and inputs to count for a model of a codebase (``scope``) or a bare
    backbone (``scope=None``) at input ``shape = (height, width)``."""
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f'shape must be (height, width) with positive sizes, got {shape}')
    height, width = (int(s) for s in shape)
    x = torch.randn(batch, in_channels, height, width)
    if scope is None:
        return model, (x, )
    return TensorModeWrapper(model, _data_samples(scope, height, width, batch)), (x, )


def default_shape(cfg) -> Tuple[int, int]:
    """The input size the paper (and the codebase's own tool) counts a config's model at."""
    return DEFAULT_SHAPES[config_scope(cfg)]
