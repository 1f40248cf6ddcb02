"""What a backbone costs on a GPU, counted on the CPU: operations per forward and per training
step on the GPU's code path, graph breaks, and inductor's kernels.

What ``tools/analysis/gpu_proxies.py`` runs. An eager forward on a GPU is bound by the host
launching its kernels when the model issues many small operations (docs/benchmarks.md), so
the number of operations is a proxy of its speed that needs no GPU. The models choose their
code by the device of their input (``x.device.type == 'cpu'`` takes the CPU's channels-last
and oneDNN paths), so the counts are taken on tensors that are not CPU tensors and hold no
data:

- **forward, float16**: the model's parameters and input are fake CUDA tensors
  (``torch._subclasses.FakeTensorMode``: shapes, dtypes and a device, no data, no GPU needed)
  under float16 autocast, as ``--amp`` runs it: the very operators a GPU forward dispatches,
  autocast's casts included.
- **forward, float32** and **training step, float32**: on the ``meta`` device (PyTorch's
  autograd engine cannot run a backward of fake CUDA tensors without a GPU, and autocast has
  no meta device). The training step is :func:`~spanet_tools.analysis.benchmark.make_step`'s:
  forward, the mean of each output summed, backward, SGD step (``foreach``, as SGD runs on
  CUDA).

An operation is one operator call below autograd (a ``TorchDispatchMode``), i.e. one kernel
launch on a GPU, except views and the operators that only allocate (``empty``), which launch
none; they are counted apart. ``aten._local_scalar_dense`` (``.item()``), a host-device
synchronisation on a GPU, is counted apart too. ``F.scaled_dot_product_attention`` counts as
one operation (and its backward as one), as a GPU runs it fused (flash attention); without a
GPU torch would decompose it into its unfused maths.

The graph-break columns come from ``torch._dynamo.explain`` of the forward (eval mode, no
autograd) and of the loss forward of the training step (train mode, what a compiled
training step traces), on CPU tensors: the models leave out their CPU-only paths while
being compiled, and SPANet is built without its CPU-only channels-last layout
(:func:`build_for_proxies`), so the graph traced is the GPU's. ``graph ops`` is the number of
operator nodes of the captured graphs.

The inductor columns (``inductor=True``) compile the forward, and the training step's
forward and backward, for the CPU with ``torch.compile`` and count the kernels inductor
generates (``torch._inductor.metrics.generated_kernel_count``; the CPU's C++ kernels, which
fuse like a GPU's Triton ones, without the matrix products and convolutions, which stay
library calls; inductor's graph cache is off, so that every graph is counted). The CPU code
path is taken there: SPANet is built with ``channels_last=False`` so that its compiled graph
is the GPU's (its CPU-only paths are not traced by the compiler anyway). It takes minutes per
model on a small CPU.
"""

import collections
import contextlib
import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from spanet_mm.models import SPANet
from spanet_mm.models.spectral_filter import SpectralPoolingFilter

from ..catalogue import build_backbone
from .benchmark import make_step

#: The contenders of the table by default: both SPANet generations against ConvNeXt-T.
PROXY_MODELS = ('spanet:s', 'spanetv2:s18_pure', 'spanetv2:s18_hybrid', 'convnext:tiny')
#: The model the ratios of the table are taken against.
BASELINE = 'convnext:tiny'
# Operators that launch no kernel on a GPU besides views: allocations and bookkeeping.
NO_KERNEL = frozenset(
    {
        'empty',
        'empty_like',
        'empty_strided',
        'new_empty',
        'new_empty_strided',
        'lift_fresh',
        'resize_',
        'set_',
        '_unsafe_view',
    }
)
SYNC = 'aten._local_scalar_dense'
# The optimiser of a counted training step (torch.optim.SGD is replaced while one is made).
_SGD = torch.optim.SGD


@dataclass
class OpCount:
    """The operators of one call, by kind.

    Attributes:
        ops (int): Kernel-launching operator calls (one per GPU kernel, roughly).
        views (int): Views and allocations (no kernel).
        syncs (int): ``.item()`` calls (host-device synchronisations on a GPU).
        casts (int): Dtype conversions (``aten._to_copy``) among ``ops``.
        by_name (dict): ``ops`` by operator name.
    """

    ops: int = 0
    views: int = 0
    syncs: int = 0
    casts: int = 0
    by_name: Dict[str, int] = field(default_factory=dict)

    def top(self, n: int = 8) -> List[Tuple[str, int]]:
        """The ``n`` most frequent operators, most frequent first."""
        return collections.Counter(self.by_name).most_common(n)


class OperatorCounter(TorchDispatchMode):
    """Counts the operators dispatched below autograd while active (:class:`OpCount`)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = OpCount()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # The operator without its overload: aten.empty for aten.empty.memory_format.
        namespace, op = func.namespace, func._opname
        if namespace == 'prim' or func.is_view or op in NO_KERNEL:
            self.count.views += namespace != 'prim'
        elif f'{namespace}.{op}' == SYNC:
            self.count.syncs += 1
        elif (namespace, op) == ('aten', 'equal'):
            # A comparison kernel whose answer the host waits for.
            self.count.ops += 1
            self.count.syncs += 1
            self.count.by_name['aten.equal'] = self.count.by_name.get('aten.equal', 0) + 1
            if any(_data_free(a) for a in args):
                # Without data there is nothing to compare: the tensors a model compares
                # from one call to the next (its caches' sources) have not changed.
                return True
        else:
            self.count.ops += 1
            self.count.casts += op == '_to_copy'
            key = f'{namespace}.{op}'
            self.count.by_name[key] = self.count.by_name.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def _data_free(value) -> bool:
    return isinstance(value, FakeTensor) or (isinstance(value, torch.Tensor) and value.is_meta)


class FusedAttention(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` (no mask, no dropout) of tensors that are not CPU
    ones as the fused kernel a GPU runs: ``aten._scaled_dot_product_flash_attention``, one
    operator forward and one backward, where torch would pick the unfused maths for lack of
    a GPU (fake CUDA and meta tensors). CPU tensors keep torch's own choice."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            func is F.scaled_dot_product_attention
            and _fusable(args, kwargs)
            and args[0].device.type != 'cpu'
        ):
            q, k, v = args[:3]
            out = torch.ops.aten._scaled_dot_product_flash_attention(
                q, k, v, scale=kwargs.get('scale')
            )
            return out[0]
        return func(*args, **kwargs)


def _fusable(args, kwargs) -> bool:
    """Whether an SDPA call is one that flash attention runs as is."""
    extra = dict(zip(('attn_mask', 'dropout_p', 'is_causal'), args[3:]), **kwargs)
    return (
        len(args) >= 3
        and extra.get('attn_mask') is None
        and not extra.get('dropout_p')
        and not extra.get('is_causal')
        and not extra.get('enable_gqa')
    )


@contextlib.contextmanager
def cuda_autocast_without_gpu(dtype: torch.dtype = torch.float16) -> Iterator[None]:
    """``torch.autocast('cuda', dtype)`` on a machine without a GPU (for fake CUDA tensors):
    torch would switch it off with a warning."""
    with mock.patch.object(torch.cuda.amp.common, 'amp_definitely_not_available', lambda: False):
        with torch.autocast('cuda', dtype=dtype):
            yield


def to_fake_cuda(model: nn.Module, mode: FakeTensorMode) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are fake CUDA tensors of ``mode``."""
    fake = copy.deepcopy(model).to('meta')
    return fake._apply(lambda t: FakeTensor(mode, t, torch.device('cuda', 0)))


def count_call(fn: Callable[[], None], fuse_attention: bool = True) -> OpCount:
    """The operators of one call of ``fn`` (after one uncounted call, so that first-call
    work such as a cache being filled is not counted).

    Args:
        fn (callable): The call, e.g. a forward or a training step.
        fuse_attention (bool): Count SDPA as one fused operator (:class:`FusedAttention`).
            Default True.

    Returns:
        OpCount: What the second call dispatched.
    """
    attention = FusedAttention() if fuse_attention else contextlib.nullcontext()
    with attention:
        with OperatorCounter():  # (what it counts is dropped; it answers comparisons)
            fn()
        with OperatorCounter() as counter:
            fn()
    return counter.count


@contextlib.contextmanager
def operators_built_on_the_cpu(to_device: Callable[[torch.Tensor], torch.Tensor]):
    """The per-size operators of SPANet's filter (built on a first call and cached: on a GPU
    no later forward builds them) built on the CPU and moved by ``to_device``: they select
    basis rows by value, which tensors without data cannot. The filters' shared table is
    emptied before and after, so that no tensor without data stays in it.

    Args:
        to_device (callable): A real CPU tensor -> its stand-in (meta, fake CUDA).
    """
    build = SpectralPoolingFilter._build_cached

    def build_on_the_cpu(self, height, width, device, dtype):
        with unset_fake_temporarily():
            ops = build(self, height, width, torch.device('cpu'), dtype)
            return type(ops)(*(None if t is None else to_device(t) for t in ops))

    SpectralPoolingFilter.clear_cache()
    try:
        with mock.patch.object(SpectralPoolingFilter, '_build_cached', build_on_the_cpu):
            yield
    finally:
        SpectralPoolingFilter.clear_cache()


def count_forward_fp16(model: nn.Module, size: Tuple[int, int], batch: int) -> OpCount:
    """The operators of a float16-autocast forward of ``model`` on the GPU's path (fake CUDA
    tensors, no data).

    Args:
        model (nn.Module): The backbone (copied; left as it is).
        size (tuple[int, int]): Input (height, width).
        batch (int): Images per input.
    """
    mode = FakeTensorMode()
    fake = to_fake_cuda(model, mode)
    fake.eval()  # (MMPretrain's ConvNeXt returns None from eval())
    cuda = torch.device('cuda', 0)
    with operators_built_on_the_cpu(lambda t: FakeTensor(mode, t.to('meta'), cuda)), mode:
        x = torch.empty(batch, 3, *size, device='cuda')

        def forward() -> None:
            with torch.no_grad(), cuda_autocast_without_gpu(torch.float16):
                fake(x)

        return count_call(forward)


def count_on_meta(model: nn.Module, size: Tuple[int, int], batch: int, mode: str) -> OpCount:
    """The operators of a float32 forward (``mode='forward'``) or training step
    (``'train'``) of ``model`` on the GPU's path (the meta device).

    Args:
        model (nn.Module): The backbone (copied; left as it is).
        size (tuple[int, int]): Input (height, width).
        batch (int): Images per input.
        mode (str): ``'forward'`` or ``'train'`` (:func:`make_step`'s).
    """
    meta = copy.deepcopy(model).to('meta')
    x = torch.empty(batch, 3, *size, device='meta')
    # make_step's SGD picks its for-loop implementation on the meta device, one operator per
    # parameter and step; on CUDA it runs the foreach one, as here.
    with mock.patch.object(torch.optim, 'SGD', _foreach_sgd):
        step = make_step(meta, mode, x)
    with operators_built_on_the_cpu(lambda t: t.to('meta')), _no_meta_autocast_queries():
        return count_call(step)


@contextlib.contextmanager
def _no_meta_autocast_queries() -> Iterator[None]:
    """``torch.is_autocast_enabled('meta')`` answers False (torch raises: autocast has no
    meta device), as the models ask it of their input's device."""
    query = torch.is_autocast_enabled

    def is_autocast_enabled(*args) -> bool:
        if args and args[0] == 'meta':
            return False
        return query(*args)

    with mock.patch.object(torch, 'is_autocast_enabled', is_autocast_enabled):
        yield


def _foreach_sgd(params, **kwargs) -> torch.optim.Optimizer:
    return _SGD(params, foreach=True, **kwargs)


@dataclass
class Breaks:
    """What ``torch._dynamo.explain`` saw of one function."""

    graphs: int
    breaks: int
    graph_ops: int
    reasons: List[str]


def explain(fn: Callable, *args) -> Breaks:
    """``torch._dynamo.explain`` of ``fn(*args)``, its caches reset before and after."""
    torch._dynamo.reset()
    try:
        found = torch._dynamo.explain(fn)(*args)
    finally:
        torch._dynamo.reset()
    return Breaks(
        graphs=found.graph_count,
        breaks=found.graph_break_count,
        graph_ops=sum(len(ops) for ops in found.ops_per_graph),
        reasons=sorted({str(b.reason).splitlines()[0] for b in found.break_reasons}),
    )


def graph_breaks(model: nn.Module, size: Tuple[int, int], batch: int) -> Dict[str, Breaks]:
    """The graph breaks of the forward and of the training step's loss forward, traced on
    the CPU (TorchDynamo cannot trace autocast queries of meta tensors). What TorchDynamo
    traces is the GPU's graph there: the models' CPU-only paths are left out while compiling,
    and :func:`build_for_proxies` builds SPANet without its channels-last layout.

    Args:
        model (nn.Module): The backbone (copied; left as it is).
        size (tuple[int, int]): Input (height, width).
        batch (int): Images per input.

    Returns:
        dict: ``{'forward': Breaks, 'train': Breaks}``.
    """
    model = copy.deepcopy(model)
    x = torch.randn(batch, 3, *size)
    model.eval()
    with torch.no_grad():
        forward = explain(model, x)
    model.train()
    train = explain(lambda inputs: _loss(model(inputs)), x)
    return dict(forward=forward, train=train)


def _loss(outs) -> torch.Tensor:
    """make_step's loss: the mean of each output, summed."""
    return sum(out.float().mean() for out in outs)


def inductor_kernels(
    model: nn.Module, size: Tuple[int, int], batch: int, mode: str
) -> Tuple[int, float]:
    """The kernels inductor generates for the CPU when compiling the forward (``'forward'``)
    or the training step's forward and backward (``'train'``), and the seconds it took.

    Args:
        model (nn.Module): The backbone (copied; left as it is).
        size (tuple[int, int]): Input (height, width).
        batch (int): Images per input.
        mode (str): ``'forward'`` or ``'train'``.
    """
    # Imported here: inductor's modules take seconds to import, and only this count needs them.
    import torch._inductor.config as inductor_config
    from torch._inductor import metrics

    model = copy.deepcopy(model)
    x = torch.randn(batch, 3, *size)
    torch._dynamo.reset()
    metrics.reset()
    # One static graph per input, as the compiled inference path compiles: no shape-generic
    # recompilation of frames that a graph break makes TorchDynamo enter again.
    compiled = torch.compile(model, dynamic=False)
    start = time.perf_counter()
    # Without the graph cache: a graph found there (compiled before, or the same block again
    # after a graph break) generates no kernels and would not be counted.
    with inductor_config.patch(fx_graph_cache=False):
        if mode == 'forward':
            model.eval()
            with torch.no_grad():
                compiled(x)
        else:
            model.train()
            _loss(compiled(x)).backward()
    seconds = time.perf_counter() - start
    kernels = metrics.generated_kernel_count
    torch._dynamo.reset()
    return kernels, seconds


@dataclass
class Proxies:
    """Every count of one contender at one input (see the module docstring)."""

    model: str
    size: Tuple[int, int]
    batch: int
    forward_fp16: OpCount
    forward_fp32: OpCount
    train_fp32: OpCount
    forward_breaks: Breaks
    train_breaks: Breaks
    inductor_forward: Optional[int] = None
    inductor_train: Optional[int] = None
    inductor_s: Optional[float] = None

    def to_json(self) -> dict:
        return asdict(self)


def build_for_proxies(name: str, arch=None) -> nn.Module:
    """A catalogued backbone (random weights), SPANet without its CPU-only channels-last
    layout (so that compiling on the CPU traces the GPU's graph).

    Args:
        name (str): ``FAMILY:ARCH`` (:func:`~spanet_tools.catalogue.build_backbone`), or a
            bare family with ``arch``.
        arch (str | dict, optional): A custom arch of this package's families (tiny ones in
            tests).
    """
    model = build_backbone(name, arch)
    if isinstance(model, SPANet):
        model.channels_last = False
    return model


def measure(
    name: str,
    size: Tuple[int, int] = (224, 224),
    batch: int = 2,
    inductor: bool = False,
    arch=None,
    log: Callable[[str], None] = print,
) -> Proxies:
    """Every proxy of one contender.

    Args:
        name (str): ``FAMILY:ARCH``, or a bare family with ``arch``.
        size (tuple[int, int]): Input (height, width). Default 224x224.
        batch (int): Images per input. Default 2 (the counts do not depend on it, except
            that a batch of 1 could let an operator be skipped).
        inductor (bool): Also compile for the CPU and count inductor's kernels (slow).
        arch (str | dict, optional): A custom arch (see :func:`build_for_proxies`).
        log (callable): Where progress lines go.

    Returns:
        Proxies: The counts.

    Raises:
        ValueError: If ``batch`` is below 1.
    """
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    model = build_for_proxies(name, arch)
    start = time.perf_counter()
    breaks = graph_breaks(model, size, batch)
    proxies = Proxies(
        model=name,
        size=tuple(size),
        batch=batch,
        forward_fp16=count_forward_fp16(model, size, batch),
        forward_fp32=count_on_meta(model, size, batch, 'forward'),
        train_fp32=count_on_meta(model, size, batch, 'train'),
        forward_breaks=breaks['forward'],
        train_breaks=breaks['train'],
    )
    log(f'{name}: counted in {time.perf_counter() - start:.1f} s')
    if inductor:
        proxies.inductor_forward, forward_s = inductor_kernels(model, size, batch, 'forward')
        proxies.inductor_train, train_s = inductor_kernels(model, size, batch, 'train')
        proxies.inductor_s = forward_s + train_s
        log(f'{name}: compiled for the CPU in {forward_s:.0f} s (forward), {train_s:.0f} s (train)')
    return proxies


def measure_all(
    models: Sequence[str] = PROXY_MODELS,
    size: Tuple[int, int] = (224, 224),
    batch: int = 2,
    inductor: bool = False,
    log: Callable[[str], None] = print,
) -> List[Proxies]:
    """:func:`measure` of each of ``models``."""
    if not models:
        raise ValueError('no model given')
    return [measure(name, size, batch, inductor, log=log) for name in models]


def _ratio(value: Optional[int], base: Optional[int]) -> str:
    return f' ({value / base:.2f}x)' if value is not None and base else ''


def _ops_cell(result: Proxies, base: Optional[Proxies], attr: str) -> str:
    value = getattr(result, attr).ops
    return f'{value}' + _ratio(value, getattr(base, attr).ops if base else None)


def format_table(results: Sequence[Proxies], baseline: str = BASELINE) -> str:
    """A Markdown table of the counts, each with its ratio to ``baseline``'s where it is among
    the results, and the graph breaks' reasons and most frequent operators below it.

    Args:
        results (Sequence[Proxies]): What :func:`measure` returned, one per contender.
        baseline (str): The contender the ratios are taken against.

    Returns:
        str: The table and its notes.
    """
    base = next((r for r in results if r.model == baseline), None)
    inductor = any(r.inductor_forward is not None for r in results)
    head = [
        'model',
        'forward ops, float16',
        'of which casts',
        'forward ops, float32',
        'training-step ops, float32',
        'graph breaks (forward / train)',
        'graphs',
        'graph ops (forward)',
    ]
    if inductor:
        head += ['inductor kernels (forward / train)']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in results:
        row = [
            r.model,
            _ops_cell(r, base, 'forward_fp16'),
            str(r.forward_fp16.casts),
            _ops_cell(r, base, 'forward_fp32'),
            _ops_cell(r, base, 'train_fp32'),
            f'{r.forward_breaks.breaks} / {r.train_breaks.breaks}',
            f'{r.forward_breaks.graphs} / {r.train_breaks.graphs}',
            f'{r.forward_breaks.graph_ops}'
            + _ratio(r.forward_breaks.graph_ops, base.forward_breaks.graph_ops if base else None),
        ]
        if inductor:
            row.append(
                f'{r.inductor_forward} / {r.inductor_train}'
                if r.inductor_forward is not None
                else '-'
            )
        lines.append('| ' + ' | '.join(row) + ' |')
    first = results[0] if results else None
    if first is not None:
        lines += [
            '',
            f'Input {first.size[0]}x{first.size[1]}, batch {first.batch}; ratios to {baseline}.',
        ]
    for r in results:
        for kind, found in (('forward', r.forward_breaks), ('train', r.train_breaks)):
            for reason in found.reasons:
                lines.append(f'- {r.model}, {kind}: graph break: {reason[:160]}')
        if r.forward_fp16.syncs or r.train_fp32.syncs:
            lines.append(
                f'- {r.model}: {r.forward_fp16.syncs} host-device synchronisations per '
                f'forward, {r.train_fp32.syncs} per training step'
            )
        top = ', '.join(f'{name.partition(".")[2]} {n}' for name, n in r.forward_fp16.top(6))
        lines.append(f'- {r.model}, most frequent float16 forward operators: {top}')
    return '\n'.join(lines)
