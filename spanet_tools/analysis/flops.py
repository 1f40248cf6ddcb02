"""Parameters and FLOPs with MMEngine's fvcore port, with the spectral parts on their own lines.

Counting convention (fvcore's, used by the papers' tables): one multiply-add is one "FLOP"
(so the numbers are MACs), only the operators fvcore has handles for are counted
(convolutions, matmuls, linear layers, norms, ...) and element-wise products, activations and
FFTs are skipped. Added here: ``baddbmm``/``addbmm``/``addmm_``, matrix products fvcore lacks,
counted like its ``bmm``, and ``scaled_dot_product_attention`` (SPANetV2's hybrids), counted
as its two matrix products ``q k^T`` and ``attn v``, as fvcore counts attention written with
``matmul`` (the authors' code). Both papers compute their spectral parts with ``torch.fft``,
so their published FLOPs leave the FFTs out.

The spectral parts are therefore reported separately (:data:`SPECTRAL_KINDS`), per module
found by type, measured by hooks (its input shape) and by fvcore's per-module attribution
(its cost as implemented), never by reading its internals:

* SPANet's Spectral Pooling Filter (SPF, :class:`~spanet_mm.models.SpectralPoolingFilter` and
  the reference's ``ReferenceSPF``), on ``(B, C, H, W)``: one forward and one inverse complex
  2-D FFT of ``N = H * W`` points per channel (the textbook ``5 N log2 N`` real FLOPs each)
  plus the complex-by-real mask product (``2 N``):
  ``C * (10 N log2 N + 2 N)`` real FLOPs per image.
* SPANetV2's ExSPAM (:class:`~spanet_mm.models.exspam.ExSPAM` and ``ReferenceExSPAM``), whose
  heads split the ``C`` context channels and each run ``rfft2`` -> real gain -> ``irfft2``
  over ``(H, W)``: a real FFT costs half a complex one (``2.5 N log2 N`` real FLOPs, the
  textbook count of the packed real transform), the gain multiplies the complex half
  spectrum of ``H * (W // 2 + 1)`` bins by a real number (2 real FLOPs per bin):
  ``C * (5 N log2 N + 2 H (W // 2 + 1))`` real FLOPs per image, whatever the number of heads.

For each, ``fft_macs`` is that formula halved (real FLOPs to MAC units, like the rest), and
``implemented_macs`` is what fvcore counts inside the part as the model at hand implements
it (for spanet_mm's partial-DFT SPF, its small matmuls; for anything computed with
``torch.fft``, zero). The headline ``flops`` is fvcore's total minus ``implemented_macs``:
the papers' convention, the same for any implementation of the spectral parts.
"""

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from torch import Tensor, nn

from spanet_mm.codebases import codebase_of, tensor_outputs

from .hooks import capture

# Input (height, width) the papers' and the codebases' tables use by default.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1280), 'mmseg': (512, 512)}


def _product_flop_jit(inputs: list, outputs: list) -> int:
    """MACs of ``out = beta * input + alpha * (a @ b)`` (``baddbmm``, ``addmm_``): one per
    element of ``a`` and column of ``b``; the scaled addition is element-wise (not counted)."""
    from mmengine.analysis.jit_handles import get_shape

    a_shape, b_shape = get_shape(inputs[1]), get_shape(inputs[2])
    return math.prod(a_shape) * b_shape[-1]


def _attention_flop_jit(inputs: list, outputs: list) -> int:
    """MACs of ``scaled_dot_product_attention(q, k, v)``: the two matrix products
    ``q k^T`` and ``softmax(.) v`` of every head, as fvcore counts the same attention
    written with ``matmul`` (the softmax and scaling are element-wise, not counted)."""
    from mmengine.analysis.jit_handles import get_shape

    q_shape, k_shape, v_shape = (get_shape(inputs[i]) for i in range(3))
    queries, keys = q_shape[-2], k_shape[-2]
    return math.prod(q_shape[:-2]) * queries * keys * (q_shape[-1] + v_shape[-1])


# Matrix products that fvcore has no handle for, counted like its bmm/addmm/matmul.
EXTRA_OP_HANDLES = {
    'aten::baddbmm': _product_flop_jit,
    'aten::baddbmm_': _product_flop_jit,
    'aten::addbmm': _product_flop_jit,
    'aten::addmm_': _product_flop_jit,
    'aten::scaled_dot_product_attention': _attention_flop_jit,
}


def fft_filter_flops(channels: int, height: int, width: int) -> float:
    """Real FLOPs of one SPF call in the SPANet paper's FFT formulation, per image.

    ``channels * (2 * 5 N log2 N + 2 N)`` with ``N = height * width``: a forward and an
    inverse complex 2-D FFT per channel and the mask product; the ``fftshift`` rolls move
    data and cost no arithmetic.
    """
    points = height * width
    if points <= 1:
        return 0.0
    return channels * (10 * points * math.log2(points) + 2 * points)


def real_fft_filter_flops(channels: int, height: int, width: int) -> float:
    """Real FLOPs of one ExSPAM spectral gain (SPANetV2) in its FFT formulation, per image.

    ``channels * (2 * 2.5 N log2 N + 2 H (W // 2 + 1))`` with ``N = height * width``: an
    ``rfft2`` and an ``irfft2`` per channel (a real transform at half the textbook
    ``5 N log2 N`` of a complex one) and the real gain on the complex half spectrum.
    """
    points = height * width
    if points <= 1:
        return 0.0
    return channels * (5 * points * math.log2(points) + 2 * height * (width // 2 + 1))


@dataclass(frozen=True)
class SpectralKind:
    """A spectral part of a model that fvcore cannot count as the paper computes it.

    Attributes:
        key (str): Name in JSON output.
        title (str): Name in printed output.
        types (callable): ``types() -> tuple[type, ...]``, the module classes to hook.
        read (callable): ``read(module, args) -> (batch, channels, height, width)`` of a call.
        fft_flops (callable): ``fft_flops(channels, height, width)``, real FLOPs per image.
        formula (str): The formula, for printed output.
        implemented (callable): ``implemented(name, module) -> list[str]``, the names of the
            submodules (relative to the model) whose fvcore count is the part as implemented.
        implemented_note (str): What that count covers, for printed output.
    """

    key: str
    title: str
    types: Callable[[], Tuple[type, ...]]
    read: Callable[[nn.Module, tuple], Tuple[int, int, int, int]]
    fft_flops: Callable[[int, int, int], float]
    formula: str
    implemented: Callable[[str, nn.Module], List[str]]
    implemented_note: str


def _spf_types() -> Tuple[type, ...]:
    from spanet_mm.models.spectral_filter import SpectralPoolingFilter
    from spanet_tools.reference import ReferenceSPF

    return (SpectralPoolingFilter, ReferenceSPF)


def _read_nchw(module: nn.Module, args: tuple) -> Tuple[int, int, int, int]:
    shape = tuple(int(s) for s in args[0].shape)
    if len(shape) != 4:
        raise ValueError(f'{type(module).__name__}: expected (N, C, H, W) input, got shape {shape}')
    return shape


SPF = SpectralKind(
    key='spectral_filter',
    title='Spectral filter (SPF)',
    types=_spf_types,
    read=_read_nchw,
    fft_flops=fft_filter_flops,
    formula='C*(2*5*N*log2(N) + 2*N)/2 per call, N=H*W: forward + inverse complex FFT and '
    'the mask product, real FLOPs halved to MACs',
    implemented=lambda name, module: [name],
    implemented_note="fvcore's count inside the SPF modules",
)


def _exspam_types() -> Tuple[type, ...]:
    from spanet_mm.models.exspam import ExSPAM
    from spanet_tools.reference.spanetv2 import ReferenceExSPAM

    return (ExSPAM, ReferenceExSPAM)


def _read_exspam(module: nn.Module, args: tuple) -> Tuple[int, int, int, int]:
    """ExSPAM works channels-last, ``(B, H, W, C)``; all ``C`` context channels (every
    head's) go through the spectral gain."""
    shape = tuple(int(s) for s in args[0].shape)
    if len(shape) != 4:
        raise ValueError(f'{type(module).__name__}: expected (B, H, W, C) input, got shape {shape}')
    batch, height, width, channels = shape
    return batch, channels, height, width


EXSPAM = SpectralKind(
    key='exspam_fft',
    title='ExSPAM spectral gain (rfft2, gain, irfft2)',
    types=_exspam_types,
    read=_read_exspam,
    fft_flops=real_fft_filter_flops,
    formula='C*(2*2.5*N*log2(N) + 2*H*(W//2+1))/2 per call, N=H*W: rfft2 + irfft2 per '
    'channel and the real gain on the half spectrum, real FLOPs halved to MACs',
    # ExSPAM computes the gain with torch.fft inside its own forward (no submodule), and
    # fvcore counts no FFT: nothing of it is in fvcore's total to take out.
    implemented=lambda name, module: [],
    implemented_note='0: computed with torch.fft, which fvcore does not count',
)

SPECTRAL_KINDS: List[SpectralKind] = [SPF, EXSPAM]


@dataclass
class SpectralCall:
    """One call of a spectral part seen during the count."""

    kind: SpectralKind
    name: str
    channels: int
    height: int
    width: int
    batch: int
    implemented_macs: int = 0

    @property
    def fft_macs(self) -> float:
        """The part in its paper's FFT formulation, in MAC units (real FLOPs / 2)."""
        return self.batch * self.kind.fft_flops(self.channels, self.height, self.width) / 2


@dataclass
class Complexity:
    """What :func:`count_complexity` measured.

    Attributes:
        params (int): Number of parameters.
        fvcore_total (int): fvcore's total, with the spectral parts as implemented.
        spectral (list[SpectralCall]): One entry per call of a spectral part.
        unsupported_ops (dict): Operators fvcore skipped, with how often they ran.
        analyzer (FlopAnalyzer): For per-module tables.
    """

    params: int
    fvcore_total: int
    spectral: List[SpectralCall] = field(default_factory=list)
    unsupported_ops: Dict[str, int] = field(default_factory=dict)
    analyzer: Optional[FlopAnalyzer] = None

    @property
    def implemented_macs(self) -> int:
        """fvcore's count inside the spectral parts (as implemented)."""
        return sum(call.implemented_macs for call in self.spectral)

    @property
    def fft_macs(self) -> float:
        """The spectral parts in their papers' FFT formulation, in MAC units."""
        return sum(call.fft_macs for call in self.spectral)

    @property
    def flops(self) -> int:
        """Headline count: everything but the spectral parts (the papers' convention)."""
        return self.fvcore_total - self.implemented_macs

    def spectral_kinds(self) -> Dict[SpectralKind, List[SpectralCall]]:
        """The calls grouped by kind, in :data:`SPECTRAL_KINDS` order."""
        grouped: Dict[SpectralKind, List[SpectralCall]] = {}
        for kind in SPECTRAL_KINDS:
            calls = [c for c in self.spectral if c.kind is kind]
            if calls:
                grouped[kind] = calls
        return grouped


def _spectral_modules(model: nn.Module) -> List[Tuple[SpectralKind, str, nn.Module]]:
    found = []
    for kind in SPECTRAL_KINDS:
        try:
            types = kind.types()
        except ImportError:  # a generation that is not part of this installation
            continue
        found += [(kind, n, m) for n, m in model.named_modules() if isinstance(m, types)]
    return found


def count_complexity(model: nn.Module, inputs: Tuple) -> Complexity:
    """Count parameters and FLOPs (MACs) of ``model(*inputs)`` with MMEngine's fvcore port.

    Args:
        model (nn.Module): The model; put it in eval mode first.
        inputs (tuple): Positional inputs of its forward.

    Returns:
        Complexity: The counts, with the calls of the spectral parts listed separately.
    """
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**EXTRA_OP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    parts = _spectral_modules(model)
    kind_of = {id(module): kind for kind, _, module in parts}

    # fvcore traces with torch.jit.trace; its tracer warnings (Python control flow on
    # shapes) say nothing about the counts.
    with warnings.catch_warnings(), capture(
        [(name, module) for _, name, module in parts],
        lambda module, args, out: kind_of[id(module)].read(module, args),
        pre=True,
    ) as shapes:
        warnings.simplefilter('ignore')
        total = analyzer.total()
    by_module = analyzer.by_module()
    calls = []
    for kind, name, module in parts:
        if not shapes[name]:
            continue
        implemented = sum(by_module.get(n, 0) for n in kind.implemented(name, module))
        for batch, channels, height, width in shapes[name]:
            calls.append(
                SpectralCall(
                    kind,
                    name,
                    channels=channels,
                    height=height,
                    width=width,
                    batch=batch,
                    implemented_macs=implemented // len(shapes[name]),
                )
            )
    return Complexity(
        params=parameter_count(model)[''],
        fvcore_total=total,
        spectral=calls,
        unsupported_ops=dict(analyzer.unsupported_ops()),
        analyzer=analyzer,
    )


def countable(
    model: nn.Module,
    scope: Optional[str],
    shape: Sequence[int],
    in_channels: int = 3,
    batch: int = 1,
) -> Tuple[nn.Module, Tuple[Tensor]]:
    """The module and inputs to count for a model of a codebase (``scope``) or a bare
    backbone (``scope=None``) at input ``shape = (height, width)``."""
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f'shape must be (height, width) with positive sizes, got {shape}')
    x = torch.randn(batch, in_channels, *(int(s) for s in shape))
    if scope is None:
        return model, (x,)
    return tensor_outputs(model, scope, shape, batch), (x,)


def default_shape(cfg) -> Tuple[int, int]:
    """The input size the paper (and the codebase's own tool) counts a config's model at."""
    return DEFAULT_SHAPES[codebase_of(cfg)]


@dataclass
class Measurement:
    """What :func:`measure` counted.

    Attributes:
        model (str): Class name of the counted model.
        source (str): Where it came from (config path or catalogue name).
        shape (tuple[int, int]): Input height and width.
        result (Complexity): The counts.
    """

    model: str
    source: str
    shape: Tuple[int, int]
    result: Complexity


def measure(
    config: Optional[str] = None,
    model: Optional[str] = None,
    backbone_only: bool = False,
    shape: Optional[Sequence[int]] = None,
    cfg_options: Optional[dict] = None,
) -> Measurement:
    """Build a model and count it, as ``tools/analysis/get_flops.py`` does.

    Args:
        config (str, optional): A config file of any of the three codebases.
        model (str, optional): Instead of ``config``, a catalogued ``spanet:ARCH`` or
            ``spanetv2:ARCH``: its ImageNet classifier
            (:func:`spanet_mm.codebases.classifier_config`), or with ``backbone_only`` any
            catalogued backbone (all four outputs).
        backbone_only (bool): With ``model``, count the bare backbone.
        shape (sequence[int], optional): Input ``(height, width)``; default the codebase's
            (:data:`DEFAULT_SHAPES`; 224x224 for a bare backbone).
        cfg_options (dict, optional): Overrides of ``config``.
    """
    from spanet_mm.codebases import build_model, classifier_config, load_config

    from ..catalogue import build_backbone

    if (config is None) == (model is None):
        raise ValueError('give either a config or a model name, not both and not neither')
    if backbone_only and model is None:
        raise ValueError('backbone_only goes with a model name')
    if model is not None and backbone_only:
        built, scope, source = build_backbone(model), None, model
        default = (224, 224)
    else:
        cfg = classifier_config(model) if model is not None else load_config(config, cfg_options)
        built = build_model(cfg)
        scope = codebase_of(cfg)
        source = config or f'{model} ImageNet classifier'
        default = default_shape(cfg)
    if shape is None:
        shape = default
    elif len(shape) == 1:
        shape = (shape[0], shape[0])
    shape = tuple(int(s) for s in shape)
    module, inputs = countable(built, scope, shape)
    return Measurement(type(built).__name__, source, shape, count_complexity(module, inputs))


def format_measurement(measured: Measurement) -> str:
    """Human-readable lines for a :class:`Measurement`."""
    result = measured.result
    height, width = measured.shape

    def giga(value: float) -> str:
        return f'{value / 1e9:8.3f} G'

    lines = [
        f'Model:  {measured.model} ({measured.source}), input 1x3x{height}x{width}',
        f'Params: {result.params / 1e6:8.3f} M',
        f"FLOPs:  {giga(result.flops)}  fvcore MACs without the spectral filter (the paper's "
        'convention: fvcore does not count FFTs)',
    ]
    for kind, calls in result.spectral_kinds().items():
        lines += [
            f'{kind.title}, {len(calls)} calls (not in FLOPs above):',
            f'  as the paper computes it (FFT)      '
            f'{giga(sum(c.fft_macs for c in calls))}  {kind.formula}',
            f'  as implemented here                 '
            f'{giga(sum(c.implemented_macs for c in calls))}  {kind.implemented_note}',
        ]
    if result.spectral:
        lines += [
            f'Total with the FFTs:                  {giga(result.flops + result.fft_macs)}',
            f'Total as implemented (fvcore total):  {giga(result.fvcore_total)}',
        ]
    else:
        lines.append('Spectral filter: none in this model')
    skipped = ', '.join(f'{op} x{n}' for op, n in sorted(result.unsupported_ops.items()))
    if skipped:
        lines.append(f'Not counted (no fvcore handle; element-wise ops etc.): {skipped}')
    return '\n'.join(lines)


def measurement_json(measured: Measurement) -> dict:
    """A :class:`Measurement` as plain numbers."""
    result = measured.result
    return dict(
        model=measured.model,
        source=measured.source,
        shape=list(measured.shape),
        params=result.params,
        flops=result.flops,
        fvcore_total=result.fvcore_total,
        spectral={
            kind.key: dict(
                calls=len(calls),
                fft_macs=sum(c.fft_macs for c in calls),
                implemented_macs=sum(c.implemented_macs for c in calls),
            )
            for kind, calls in result.spectral_kinds().items()
        },
        fft_macs=result.fft_macs,
        implemented_macs=result.implemented_macs,
        flops_with_fft=result.flops + result.fft_macs,
        unsupported_ops=result.unsupported_ops,
    )
