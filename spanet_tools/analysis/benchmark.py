"""Speed and memory of backbones, in one process, with a GEMM calibration of the machine.

What ``tools/analysis/benchmark.py`` runs. Contenders are catalogued backbones
(:mod:`spanet_tools.catalogue`, ``FAMILY:ARCH``: ``spanet:s``, ``reference:s``,
``spanet-nofilter:s``, ``spanet-cp:s``, ``spanetv2:s18_pure``, ``reference-v2:s18_pure``,
``convnext:tiny``, ``swin:tiny``, ``poolformer:s24``, ...) and ``config``, the
``model.backbone`` of a config file. Three variants of a contender ``NAME`` (forward only) say
where its time goes:

- ``NAME@amp-weights``: its weights stored in the autocast dtype (bfloat16 on CPU, float16 on
  CUDA; with ``amp``): the same forward without the conversion of every weight at every call
  that autocast (and oneDNN's point-wise kernels) make, i.e. the most a cache of converted
  weights could save.
- ``NAME@cuda-graph`` (CUDA only): the same model, its forward captured once per input size in
  a CUDA graph and replayed: the forward without the host's cost of launching each kernel,
  i.e. what is left when the GPU, not the Python side, sets the pace.
- ``NAME@compiled``: the same model, compiled by ``torch.compile`` (inductor) with its weights
  frozen into the compiled code (:class:`~spanet_mm.deployment.compiled.FrozenCompiledForward`),
  one static graph per input size, compiled before the timing (the report gives the compile
  time): the opt-in inference path, without per-call weight conversions and with fused
  element-wise chains.

Method: every contender is built once in this process; each round runs every contender once
in turn (interleaved, every other round in reverse order, so that load changes hit all
alike), after ``warmup`` untimed calls each. Reported: median, interquartile range and
min/max of the rounds' wall-clock times, throughput, the minor page faults each call took
(memory mapped afresh; see :func:`minor_page_faults`), and the speed-up over the reference of
the same arch (``reference:ARCH`` for ``spanet*:ARCH``, ``reference-v2:ARCH`` for
``spanetv2*:ARCH``). Models have random weights; the speed does not depend on them. Under
autocast each call opens its own region by default; ``autocast_region='run'`` opens one
around all the timed calls of a setting, where autocast converts the weights of ``nn.Linear``
and ``nn.Conv2d`` once instead of per call.

Calibration, so that figures carry across machines: before the models, the same process
times a float32 GEMM and a GEMM in the autocast dtype (bfloat16 on CPU, float16 on CUDA) of a
fixed size (``2 n^3`` FLOPs, best of a few repetitions) and reports GFLOP/s. Each model's
forward is counted with the counter of ``tools/analysis/get_flops.py``
(:func:`spanet_tools.analysis.flops.count_complexity`, its headline MACs: fvcore's count
without the spectral filter, the same number for an implementation and its reference), and
the table gives its achieved GMAC/s at the median time and the share of the calibration that
is (``2 * MAC/s / GEMM FLOP/s`` of the dtype the model ran in). A training step is counted as
three forwards (forward, and a backward of twice the forward's work), the usual estimate.

The spectral filter's share of a SPANet forward is given two ways: ``spanet:ARCH`` against
``spanet-nofilter:ARCH`` (the same model and weights with every filter the identity, timed
back to back in every round), and by hooks timing the filter calls inside each forward of
``spanet:ARCH``.

The tool fixes glibc's allocator before timing (:func:`steady_allocator`): otherwise
whether a contender faults in fresh pages on every call depends on what the process freed
before, which moved ConvNeXt-T's bfloat16 time at 224 by a third between runs.

Peak memory (``memory=True``) runs each case again in a fresh Python process: one untimed
call, then the gradients are dropped, the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``) and the growth of ``VmHWM`` over the RSS before a second call is
reported: what the call itself needed (activations, gradients, allocator and oneDNN scratch),
not the weights. The child runs with a fixed glibc mmap threshold, so that freed memory goes
back to the system and the resident set follows the tensors in use. On CUDA the allocator's
peak is read instead.
"""

import contextlib
import copy
import ctypes
import json
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from spanet_mm.deployment.compiled import FrozenCompiledForward
from spanet_mm.deployment.cuda_graph import CUDAGraphForward

from ..catalogue import build_backbone, split_name, without_filters

DEFAULT_MODELS = ('spanet:s', 'reference:s', 'spanet-nofilter:s', 'convnext:tiny')
# The calibration GEMM: n x n by n x n.
CALIBRATION_SIZE = 2048
CALIBRATION_REPS = 5
# Variants of a contender, NAME@VARIANT: weights stored in the autocast dtype; the forward
# replayed from a CUDA graph; the forward compiled with frozen weights.
AMP_WEIGHTS = 'amp-weights'
CUDA_GRAPH = 'cuda-graph'
COMPILED = 'compiled'
VARIANTS = (AMP_WEIGHTS, CUDA_GRAPH, COMPILED)
# Where the autocast region of a run with amp opens: around each call, or once around all the
# timed calls of a setting (as a loop inside one ``with torch.autocast(...)`` runs).
AUTOCAST_REGIONS = ('call', 'run')
# A training step's MACs in forwards (forward, backward of input and weight gradients).
TRAIN_STEP_FORWARDS = 3


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, interpolated linearly between the ordered values."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (pos - low) * (ordered[high] - ordered[low])


@dataclass
class Result:
    """Timings (seconds) of one contender in one setting, and its forward's MACs."""

    model: str
    mode: str
    height: int
    width: int
    batch: int
    times: List[float] = field(default_factory=list)
    macs: Optional[float] = None
    peak_mb: Optional[float] = None
    filter_share: List[Tuple[float, float]] = field(default_factory=list)  # (share, s)
    page_faults: List[int] = field(default_factory=list)  # minor faults of each timed call
    compile_s: Optional[float] = None  # NAME@compiled: seconds to compile for this input

    def quantile(self, q: float) -> float:
        return quantile(self.times, q)

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.times)

    @property
    def median_page_faults(self) -> Optional[float]:
        """Median minor page faults per timed call (None if not counted)."""
        return statistics.median(self.page_faults) if self.page_faults else None

    @property
    def gmacs_per_s(self) -> Optional[float]:
        """Achieved GMAC/s at the median time (a training step counts as three forwards)."""
        if self.macs is None:
            return None
        work = self.macs * (TRAIN_STEP_FORWARDS if self.mode == 'train' else 1)
        return work / (self.median_ms / 1000) / 1e9

    def summary(
        self, calibration: Optional[Dict[str, float]] = None, dtype: str = 'float32'
    ) -> dict:
        return dict(
            model=self.model,
            mode=self.mode,
            height=self.height,
            width=self.width,
            batch=self.batch,
            median_ms=self.median_ms,
            q1_ms=1000 * self.quantile(0.25),
            q3_ms=1000 * self.quantile(0.75),
            min_ms=1000 * min(self.times),
            max_ms=1000 * max(self.times),
            images_per_s=self.batch * 1000 / self.median_ms,
            rounds=len(self.times),
            macs=self.macs,
            gmacs_per_s=self.gmacs_per_s,
            compile_s=self.compile_s,
            calibration_share=calibration_share(self, calibration, dtype),
            peak_mb=self.peak_mb,
            times_ms=[1000 * t for t in self.times],
            filter_share=self.filter_share,
            page_faults=self.page_faults,
            median_page_faults=self.median_page_faults,
        )


@dataclass
class Report:
    """Everything one benchmark run measured."""

    results: List[Result]
    calibration: Dict[str, float]
    dtype: str
    environment: dict

    def to_json(self) -> dict:
        return dict(
            environment=self.environment,
            calibration_gflops=self.calibration,
            dtype=self.dtype,
            results=[r.summary(self.calibration, self.dtype) for r in self.results],
        )


# -- calibration --------------------------------------------------------------------------


def add_timing_arguments(parser, threads_help: str = 'torch.set_num_threads (default 2)') -> None:
    """The command-line options every timing tool shares: ``--rounds``, ``--warmup``,
    ``--threads``, ``--calibration-size`` and ``--json`` (checked by
    :func:`check_timing_arguments`)."""
    parser.add_argument('--rounds', type=int, default=10, help='timed rounds (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds (default 2)')
    parser.add_argument('--threads', type=int, default=2, help=threads_help)
    parser.add_argument(
        '--calibration-size',
        type=int,
        default=CALIBRATION_SIZE,
        help='side of the calibration GEMM (default %(default)s)',
    )
    parser.add_argument('--json', help="write all results (and each round's time) here")


def check_timing_arguments(parser, args) -> None:
    """Refuse, as a usage error, rounds, threads or a calibration size below 1 and a negative
    warm-up."""
    if args.rounds < 1 or args.threads < 1 or args.calibration_size < 1 or args.warmup < 0:
        parser.error(
            '--rounds, --threads and --calibration-size must be >= 1 and --warmup >= 0, got '
            f'{args.rounds}, {args.threads}, {args.calibration_size} and {args.warmup}'
        )


def gemm_gflops(
    dtype: torch.dtype,
    size: int = CALIBRATION_SIZE,
    reps: int = CALIBRATION_REPS,
    device: Optional[torch.device] = None,
) -> float:
    """GFLOP/s of an ``size x size`` by ``size x size`` GEMM in ``dtype`` (``2 size^3`` FLOPs),
    best of ``reps`` timed runs after one untimed run."""
    if size < 1 or reps < 1:
        raise ValueError(f'size and reps must be positive, got {size} and {reps}')
    device = device or torch.device('cpu')
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    best = float('inf')
    for rep in range(reps + 1):
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _synchronize(device)
        if rep > 0:  # the first run pays for allocations and kernel selection
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def calibrate(
    dtypes: Sequence[torch.dtype],
    size: int = CALIBRATION_SIZE,
    reps: int = CALIBRATION_REPS,
    device: Optional[torch.device] = None,
) -> Dict[str, float]:
    """dtype name -> GEMM GFLOP/s (:func:`gemm_gflops`) for each of ``dtypes``."""
    return {dtype_name(d): gemm_gflops(d, size, reps, device) for d in dtypes}


def calibration_share(
    result: Result, calibration: Optional[Dict[str, float]], dtype: str
) -> Optional[float]:
    """The model's achieved FLOP/s as a share of the calibration GEMM's in ``dtype``."""
    if result.gmacs_per_s is None or not calibration or dtype not in calibration:
        return None
    return 2 * result.gmacs_per_s / calibration[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``'bfloat16'``."""
    return str(dtype).replace('torch.', '')


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# -- building contenders ------------------------------------------------------------------


def build_contender(name: str, config: Optional[str] = None, device: str = 'cpu') -> nn.Module:
    """A catalogued backbone (``FAMILY:ARCH``) or, for ``config``, the ``model.backbone`` of
    the config file ``config``, with random weights, in eval mode, on ``device``; for
    ``NAME@amp-weights`` with its weights in the autocast dtype of ``device``."""
    base, variant = split_variant(name)
    if base == 'config':
        if config is None:
            raise ValueError('the contender "config" needs a config file (--config PATH)')
        from spanet_mm.codebases import build_model, load_config

        model = build_model(load_config(config), 'backbone')
    else:
        model = build_backbone(base)
    model = model.to(device)
    return model.to(amp_dtype_of(torch.device(device))) if variant == AMP_WEIGHTS else model


def split_variant(name: str) -> Tuple[str, Optional[str]]:
    """``'spanet:s@cuda-graph'`` -> ``('spanet:s', 'cuda-graph')``; ``'spanet:s'`` ->
    ``('spanet:s', None)``."""
    base, marker, variant = name.partition('@')
    if marker and variant not in VARIANTS:
        raise ValueError(
            f'A contender is NAME or NAME@VARIANT, VARIANT one of '
            f'{", ".join(VARIANTS)}; got {name!r}'
        )
    return base, variant if marker else None


def amp_dtype_of(device: torch.device) -> torch.dtype:
    """The autocast dtype the benchmark uses on ``device``'s type."""
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def autocast_to(amp_dtype: Optional[torch.dtype], device: torch.device) -> ContextManager[None]:
    """An autocast region to ``amp_dtype`` on ``device``'s type; when ``amp_dtype`` is None,
    nothing (a region the caller opened stays in force)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def split_autocast(
    amp_dtype: Optional[torch.dtype], autocast_region: str
) -> Tuple[Optional[torch.dtype], Optional[torch.dtype]]:
    """The autocast dtype of the region around each call and of the region around a whole
    run: ``amp_dtype`` for the one ``autocast_region`` names, None for the other."""
    return (amp_dtype, None) if autocast_region == 'call' else (None, amp_dtype)


def reference_of(name: str) -> Optional[str]:
    """The paper-literal reference a contender is compared with (``None`` if it has none)."""
    base, variant = split_variant(name)
    if base == 'config' or variant:  # how the variant differs from its base is its point
        return None
    family, arch = split_name(base)
    if family.startswith('spanetv2') or family == 'reference-v2':
        return f'reference-v2:{arch}'
    if family.startswith('spanet') or family == 'reference':
        return f'reference:{arch}'
    return None


def forward_macs(model: nn.Module, x: torch.Tensor) -> float:
    """Headline MACs of ``model(x)`` as ``tools/analysis/get_flops.py`` counts them (of a
    float32 copy for a model whose weights are not float32)."""
    from .flops import count_complexity

    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = copy.deepcopy(model).float()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs = count_complexity(model, (x,)).flops
    model.train(was_training)
    return float(macs)


# -- one call of a contender --------------------------------------------------------------


def make_step(
    model: nn.Module, mode: str, x: torch.Tensor, amp_dtype: Optional[torch.dtype] = None
) -> Callable[[], None]:
    """A function running one forward (``mode='forward'``, no autograd) or one training
    step (``'train'``: forward, mean of each output summed, backward, SGD step), in an
    autocast region of its own to ``amp_dtype`` if given (a forward without one runs in
    whatever region its caller opened). On CUDA it waits for the device before returning,
    so that wall-clock times cover the work."""
    device = x.device
    if mode == 'forward':
        model.eval()

        def forward() -> None:
            with torch.no_grad(), autocast_to(amp_dtype, device):
                model(x)
            _synchronize(device)

        return forward
    if mode != 'train':
        raise ValueError(f'mode must be forward or train, got {mode!r}')
    model.train()
    # Plain SGD keeps no state, so the memory figures are the step's own.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_to(amp_dtype, device):
            outs = model(x)
            loss = sum(out.float().mean() for out in outs)
        loss.backward()
        optimizer.step()
        _synchronize(device)

    return train_step


def make_graphed_forward(
    model: nn.Module, x: torch.Tensor, amp_dtype: Optional[torch.dtype] = None
) -> Callable[[], None]:
    """:func:`make_step`'s forward recorded in a CUDA graph
    (:class:`~spanet_mm.deployment.cuda_graph.CUDAGraphForward`): each call replays it and
    waits for the device. Its ``capture_peak_mb`` is the graph's memory."""
    graphed = CUDAGraphForward(model, x, amp_dtype)

    def replay() -> None:
        graphed.replay()
        _synchronize(x.device)

    replay.capture_peak_mb = graphed.capture_peak_mb
    return replay


def make_compiled_forward(
    model: nn.Module, x: torch.Tensor, amp_dtype: Optional[torch.dtype] = None
) -> Callable[[], None]:
    """:func:`make_step`'s forward compiled with frozen weights
    (:class:`~spanet_mm.deployment.compiled.FrozenCompiledForward`, a static graph for
    ``x``'s shape), compiled here by one call; its ``compile_s`` is how long that took."""
    compiled = FrozenCompiledForward(model, amp_dtype, dynamic=False)

    def forward() -> None:
        compiled(x)
        _synchronize(x.device)

    start = time.perf_counter()
    forward()
    forward.compile_s = time.perf_counter() - start
    return forward


def make_call(
    name: str,
    model: nn.Module,
    mode: str,
    x: torch.Tensor,
    amp_dtype: Optional[torch.dtype] = None,
    autocast_region: str = 'call',
) -> Callable[[], None]:
    """One call of the contender ``name`` (``model``) on ``x``, as its variant runs it:
    replayed from a CUDA graph, compiled, or :func:`make_step`'s eager step with an autocast
    region of its own where ``autocast_region`` is ``'call'``. (A graph or compiled code opens
    its own region: it runs the same in either.)"""
    variant = split_variant(name)[1]
    if variant == CUDA_GRAPH:
        return make_graphed_forward(model, x, amp_dtype)
    if variant == COMPILED:
        return make_compiled_forward(model, x, amp_dtype)
    return make_step(model, mode, x, split_autocast(amp_dtype, autocast_region)[0])


def interleaved_timings(
    steps: Dict[str, Callable[[], None]], rounds: int, warmup: int
) -> Tuple[Dict[str, List[float]], Dict[str, List[int]]]:
    """Wall-clock seconds of each step, run round by round, in turn, and the minor page
    faults the process took during each call (:func:`minor_page_faults`)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    faults: Dict[str, List[int]] = {name: [] for name in steps}
    for round_index in range(rounds):
        # Every other round runs in reverse, so that no contender always follows the same
        # one (which would leave it the same caches and the same thermal state).
        order = list(steps.items())
        for name, step in order if round_index % 2 == 0 else order[::-1]:
            faults_before = minor_page_faults()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
            faults[name].append(minor_page_faults() - faults_before)
    return times, faults


# glibc's mallopt parameters (malloc.h) and its largest mmap threshold on 64-bit machines.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
STEADY_MMAP_THRESHOLD = 32 * 2**20
STEADY_TRIM_THRESHOLD = 2**30


def steady_allocator() -> bool:
    """Fix glibc's allocator for the rest of this process: blocks up to 32 MiB come from
    the heap, and freed memory stays with the process (up to 1 GiB) instead of going back to
    the system.

    By default glibc maps blocks above a threshold afresh (faulting their pages in on every
    call) and raises that threshold whenever the process frees such a block, so whether a
    contender pays for fresh pages depends on what ran before it: ConvNeXt-T's bfloat16
    forward at 224 took 25 or 33 ms in the same process depending on it. With the threshold
    fixed, every contender runs as a long-lived process that has warmed up would.

    Returns:
        bool: Whether the settings were taken (False where the C library is not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD)
    )


def minor_page_faults() -> int:
    """Minor page faults of this process so far (all its threads): per call, the pages of
    memory mapped afresh for it (see :func:`steady_allocator`), thousands of which cost
    milliseconds."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timing_order(names: Sequence[str]) -> List[str]:
    """``names``, with each ``spanet-nofilter:ARCH`` moved right after ``spanet:ARCH``, so
    that every round times the two back to back and their per-round ratio is paired."""
    order = [name for name in names if not name.startswith('spanet-nofilter:')]
    for name in names:
        if name not in order:
            partner = 'spanet:' + name.partition(':')[2]
            order.insert(order.index(partner) + 1 if partner in order else len(order), name)
    return order


def filter_time_share(
    model: nn.Module,
    x: torch.Tensor,
    rounds: int,
    amp_dtype: Optional[torch.dtype] = None,
    autocast_region: str = 'call',
) -> List[Tuple[float, float]]:
    """Per forward (under autocast to ``amp_dtype`` if given, in regions opened as
    ``autocast_region`` says, as the timed ones), the share of its wall-clock time spent
    inside the Spectral Pooling Filter modules (timed by hooks around each call, in the same
    forward, so that load changes between rounds cancel out), and the forward's time."""
    from spanet_mm.models import SpectralPoolingFilter

    spent = [0.0]
    started: List[float] = []

    def before(module, args) -> None:
        started.append(time.perf_counter())

    def after(module, args, output) -> None:
        spent[0] += time.perf_counter() - started.pop()

    filters = [m for m in model.modules() if isinstance(m, SpectralPoolingFilter)]
    handles = [
        h
        for m in filters
        for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))
    ]
    per_call, per_run = split_autocast(amp_dtype, autocast_region)

    def forward() -> None:
        with autocast_to(per_call, x.device):
            model(x)

    shares = []
    try:
        with torch.no_grad(), autocast_to(per_run, x.device):
            model.eval()
            forward()  # warm-up
            for _ in range(rounds):
                spent[0] = 0.0
                start = time.perf_counter()
                forward()
                total = time.perf_counter() - start
                shares.append((spent[0] / total, total))
    finally:
        for handle in handles:
            handle.remove()
    return shares


# -- memory -------------------------------------------------------------------------------


def peak_memory_mb(
    name: str,
    mode: str,
    size: Tuple[int, int],
    batch: int,
    config: Optional[str] = None,
    threads: int = 2,
    amp: bool = False,
) -> float:
    """Peak RSS growth (MB) of one call of ``name`` in a fresh process (see the module
    docstring)."""
    spec = dict(
        name=name,
        mode=mode,
        height=size[0],
        width=size[1],
        batch=batch,
        config=config,
        threads=threads,
        amp=amp,
    )
    package_root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    # A fixed mmap threshold makes glibc hand every freed block of 64 KiB or more straight
    # back to the system, so that the resident set follows the tensors alive.
    env = dict(
        os.environ,
        MALLOC_MMAP_THRESHOLD_='65536',
        MALLOC_TRIM_THRESHOLD_='65536',
        PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get('PYTHONPATH')) if p),
    )
    proc = subprocess.run(
        [sys.executable, '-m', __name__, json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f'the memory measurement of {name} failed:\n{proc.stderr[-3000:]}')
    return float(proc.stdout.strip().splitlines()[-1])


def _memory_child(spec: dict) -> float:
    """Build one contender, run one untimed call, then return the peak RSS growth (MB) of a
    second call over the RSS before it."""
    torch.set_num_threads(spec['threads'])
    model = build_contender(spec['name'], spec['config'])
    x = torch.randn(spec['batch'], 3, spec['height'], spec['width'])
    step = make_call(
        spec['name'], model, spec['mode'], x, amp_dtype_of(x.device) if spec['amp'] else None
    )
    step()  # first-call allocations (oneDNN primitives, operator caches) are not the step's
    for param in model.parameters():
        param.grad = None  # the gradients count as the step's memory
    before = _reset_peak_rss()
    step()
    return _peak_rss_kib() / 1024 - before / 1024


def cuda_peak_memory_mb(step: Callable[[], None], device: torch.device) -> float:
    """Peak CUDA memory allocated during one call, above what was allocated before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _status_kib(field_name: str) -> Optional[int]:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1])
    return None


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs) and
    return the current RSS in KiB. Without it, fall back to the lifetime ``ru_maxrss``."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return float(_status_kib('VmRSS'))
    except (OSError, TypeError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _peak_rss_kib() -> float:
    peak = _status_kib('VmHWM') if os.path.exists('/proc/self/status') else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return float(peak)


# -- a whole run ----------------------------------------------------------------------------


def environment() -> dict:
    """Versions, threads, CPU and load average, for the record."""
    return dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        machine=platform.processor() or platform.machine(),
        cpu=_cpu_name(),
        cpus=os.cpu_count(),
        loadavg=os.getloadavg(),
        command=' '.join([osp.basename(sys.argv[0])] + sys.argv[1:]),
    )


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def build_contenders(
    models: Sequence[str], config: Optional[str] = None, device: str = 'cpu'
) -> Dict[str, nn.Module]:
    """Build every contender once, on ``device``: each ``spanet-nofilter:ARCH`` from the very
    weights of ``spanet:ARCH``, and each variant ``NAME@VARIANT`` from those of ``NAME``, when
    that is a contender too (``NAME@cuda-graph`` is then ``NAME``'s very module)."""
    if not models:
        raise ValueError('no contender given')
    built: Dict[str, nn.Module] = {}
    # Each spanet:ARCH before its filter-less self, each NAME before its variants.
    for name in sorted(timing_order(models), key=lambda name: '@' in name):
        partner = 'spanet:' + name.partition(':')[2]
        base, variant = split_variant(name)
        if name.startswith('spanet-nofilter:') and partner in built:
            # "Without the filter" means the very same model (weights and all) without it.
            built[name] = without_filters(built[partner])
        elif variant == AMP_WEIGHTS and base in built:
            built[name] = copy.deepcopy(built[base]).to(amp_dtype_of(torch.device(device)))
        elif variant in (CUDA_GRAPH, COMPILED) and base in built:
            built[name] = built[base]
        else:
            built[name] = build_contender(name, config, device)
    return {name: built[name] for name in models}


def time_contenders(
    contenders: Dict[str, nn.Module],
    sizes: Sequence[Tuple[int, int]] = ((224, 224),),
    batch_sizes: Sequence[int] = (1,),
    modes: Sequence[str] = ('forward',),
    rounds: int = 10,
    warmup: int = 2,
    amp: bool = False,
    autocast_region: str = 'call',
    memory: bool = False,
    config: Optional[str] = None,
    threads: int = 2,
    calibration_size: int = CALIBRATION_SIZE,
    calibration_reps: int = CALIBRATION_REPS,
    steady: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Report:
    """Calibrate, then time built contenders in every mode, size and batch size.

    Args:
        contenders: Name (``FAMILY:ARCH`` or ``config``, which says what a contender is
            compared with) -> model, all on one device.
        sizes: ``(height, width)`` inputs.
        batch_sizes: Batch sizes.
        modes: ``forward`` (no autograd) and/or ``train`` (forward, backward, SGD step).
        rounds: Timed rounds (each runs every contender once).
        warmup: Untimed rounds before.
        amp: Autocast to bfloat16 (CPU) or float16 (CUDA).
        autocast_region: With ``amp``, where the autocast region opens: ``'call'`` around
            each call (as MMEngine's loops do), ``'run'`` once around all the timed calls
            of a setting, warm-up included (forward mode only), as code that loops inside
            one ``with torch.autocast(...)`` does. autocast keeps the weights it casts for
            ``nn.Linear`` and ``nn.Conv2d`` until its region closes, so a model made of them
            converts its weights once per region rather than once per call.
        memory: Also measure the peak memory of each case (on CPU in a fresh process, which
            builds the contender again by name, with an autocast region around its call).
        config: The config whose ``model.backbone`` is the contender ``config``.
        threads: ``torch.set_num_threads``.
        calibration_size: Side of the calibration GEMM.
        calibration_reps: Its timed repetitions (the best counts).
        steady: Fix glibc's allocator first (:func:`steady_allocator`; for the rest of the
            process), so that no contender's time depends on what ran before it.
        log: Where progress lines go.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f'rounds must be >= 1 and warmup >= 0, got {rounds} and {warmup}')
    torch.set_num_threads(threads)
    names = list(contenders)
    dev = next(next(iter(contenders.values())).parameters()).device
    env = environment()
    env['allocator'] = (
        f'steady (glibc: mmap threshold {STEADY_MMAP_THRESHOLD >> 20} MiB, no '
        f'trimming below {STEADY_TRIM_THRESHOLD >> 20} MiB)'
        if steady and steady_allocator()
        else 'as found'
    )
    if dev.type == 'cuda':
        # The GPU is the machine that matters; the float32 flags say whether matrix products
        # and convolutions may use TF32 (PyTorch's defaults: not the former, the latter).
        env.update(
            gpu=torch.cuda.get_device_name(dev),
            cuda=torch.version.cuda,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        )
    log(
        f'torch {env["torch"]}, {env["threads"]} threads, {env["cpus"]} CPUs ({env["cpu"]}), '
        + (f'{env["gpu"]} (CUDA {env["cuda"]}), ' if 'gpu' in env else '')
        + f'load average {env["loadavg"][0]:.2f} at start'
    )
    amp_dtype = amp_dtype_of(dev) if amp else None
    _check_variants(names, amp_dtype, modes, dev)
    _check_autocast_region(autocast_region, amp_dtype, modes)
    env['autocast_region'] = autocast_region if amp else None
    per_run = split_autocast(amp_dtype, autocast_region)[1]
    calibration = calibrate(
        [torch.float32, amp_dtype_of(dev)], calibration_size, calibration_reps, dev
    )
    results = []
    macs: Dict[tuple, float] = {}
    for mode in modes:
        for height, width in sizes:
            for batch in batch_sizes:
                x = torch.randn(batch, 3, height, width, device=dev)
                for name in names:
                    if (name, height, width, batch) not in macs:
                        macs[name, height, width, batch] = forward_macs(contenders[name], x)
                if any(split_variant(name)[1] == COMPILED for name in names):
                    # The graphs of earlier settings are done with; past torch's limit of
                    # graphs per function, more shapes would run eagerly without a word.
                    torch._dynamo.reset()
                steps = {
                    name: make_call(name, contenders[name], mode, x, amp_dtype, autocast_region)
                    for name in timing_order(names)
                }
                with autocast_to(per_run, dev):
                    times, faults = interleaved_timings(steps, rounds, warmup)
                for name in names:
                    result = Result(
                        name,
                        mode,
                        height,
                        width,
                        batch,
                        times[name],
                        macs[name, height, width, batch],
                        page_faults=faults[name],
                        compile_s=getattr(steps[name], 'compile_s', None),
                    )
                    # Host-side hooks cannot time asynchronous CUDA work, nor compiled code.
                    if (
                        mode == 'forward'
                        and name.startswith('spanet:')
                        and dev.type == 'cpu'
                        and split_variant(name)[1] != COMPILED
                    ):
                        result.filter_share = filter_time_share(
                            contenders[name], x, rounds, amp_dtype, autocast_region
                        )
                    if memory and hasattr(steps[name], 'capture_peak_mb'):
                        # A replay allocates nothing: the graph's memory is its capture's.
                        result.peak_mb = steps[name].capture_peak_mb
                    elif memory and dev.type == 'cuda':
                        result.peak_mb = cuda_peak_memory_mb(steps[name], dev)
                    elif memory:
                        result.peak_mb = peak_memory_mb(
                            name, mode, (height, width), batch, config, threads, amp
                        )
                    results.append(result)
                    log(
                        f'  done: {name} {mode} {height}x{width} batch {batch}: '
                        f'{result.median_ms:.1f} ms'
                    )
    env['loadavg_end'] = os.getloadavg()
    return Report(results, calibration, dtype_name(amp_dtype or torch.float32), env)


def _check_variants(
    names: Sequence[str],
    amp_dtype: Optional[torch.dtype],
    modes: Sequence[str],
    device: torch.device,
) -> None:
    """Refuse variants the run cannot time (before anything is built)."""
    variants = {name: split_variant(name)[1] for name in names}
    twins = [name for name, variant in variants.items() if variant == AMP_WEIGHTS]
    graphed = [name for name, variant in variants.items() if variant == CUDA_GRAPH]
    compiled = [name for name, variant in variants.items() if variant == COMPILED]
    if twins and amp_dtype is None:
        raise ValueError(
            f'{", ".join(twins)}: weights stored in the autocast dtype take '
            'float32 input through autocast only; run with amp (--amp)'
        )
    if graphed and device.type != 'cuda':
        raise ValueError(
            f'{", ".join(graphed)}: CUDA graphs need a CUDA device (--device cuda), got {device}'
        )
    if (twins or graphed or compiled) and set(modes) != {'forward'}:
        raise ValueError(
            f'{", ".join(twins + graphed + compiled)}: variants are timed in '
            'forward mode only (a training step would update weights stored in '
            f'{dtype_name(amp_dtype or amp_dtype_of(device))} or frozen into '
            'compiled code, or need its backward and optimiser captured in a '
            'graph too)'
        )


def _check_autocast_region(
    autocast_region: str, amp_dtype: Optional[torch.dtype], modes: Sequence[str]
) -> None:
    """Refuse an autocast region the run cannot open (before anything is built)."""
    if autocast_region not in AUTOCAST_REGIONS:
        raise ValueError(
            f'autocast_region must be one of {AUTOCAST_REGIONS}, got {autocast_region!r}'
        )
    if autocast_region == 'run' and amp_dtype is None:
        raise ValueError(
            "autocast_region='run' (--autocast-region run) opens one autocast "
            'region around the run; it needs amp (--amp)'
        )
    if autocast_region == 'run' and set(modes) != {'forward'}:
        raise ValueError(
            "autocast_region='run' is for forward mode only: autocast would keep "
            'the casts of weights that each training step changes'
        )


def check_settings(
    models: Sequence[str],
    device: str = 'cpu',
    amp: bool = False,
    modes: Sequence[str] = ('forward',),
    autocast_region: str = 'call',
) -> None:
    """Refuse, before anything is built, contender variants and an autocast region that a
    run with these settings cannot time (``ValueError`` naming what to change)."""
    dev = torch.device(device)
    amp_dtype = amp_dtype_of(dev) if amp else None
    _check_variants(models, amp_dtype, modes, dev)
    _check_autocast_region(autocast_region, amp_dtype, modes)


def run_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    device: str = 'cpu',
    config: Optional[str] = None,
    steady: bool = True,
    **settings,
) -> Report:
    """What ``tools/analysis/benchmark.py`` runs: :func:`build_contenders` by name, then
    :func:`time_contenders` (whose arguments ``settings`` are), with the allocator steady
    unless ``steady=False``."""
    # Settings that would fail after the (slow) builds fail before them.
    check_settings(
        models,
        device,
        settings.get('amp', False),
        settings.get('modes', ('forward',)),
        settings.get('autocast_region', 'call'),
    )
    return time_contenders(
        build_contenders(models, config, device), config=config, steady=steady, **settings
    )


def format_report(report: Report) -> str:
    """The calibration, a table of the results (with the speed-up over the reference of the
    same arch, GMAC/s and the share of the calibration) and notes on the spectral filter."""
    results = report.results
    by_key = {(r.model, r.mode, r.height, r.width, r.batch): r for r in results}
    env = report.environment
    machine = env['gpu'] if 'gpu' in env else f'{env["cpu"]}, {env["threads"]} threads'
    lines = [
        f'calibration ({machine}, torch {env["torch"]}): '
        + ', '.join(
            f'{dtype} GEMM {gflops:.1f} GFLOP/s' for dtype, gflops in report.calibration.items()
        )
        + f'; the models ran in {report.dtype}{_region_words(env)}',
        '',
    ]
    name_width = max([22] + [len(r.model) for r in results])
    head = (
        f'{"model":<{name_width}} {"mode":<8} {"size":>9} {"batch":>5} {"median ms":>10} '
        f'{"IQR ms":>15} {"min-max ms":>17} {"img/s":>7} {"faults":>7} {"GMAC/s":>7} '
        f'{"of cal":>6} '
        f'{"vs ref":>6} {"peak MB":>8}'
    )
    lines += [head, '-' * len(head)]
    notes = []
    for r in results:
        kind, _, arch = r.model.partition(':')
        key = (r.mode, r.height, r.width, r.batch)
        ref_name = reference_of(r.model)
        ref = by_key.get((ref_name,) + key) if ref_name else None
        speedup = f'{ref.median_ms / r.median_ms:.2f}x' if ref else ''
        peak = f'{r.peak_mb:.0f}' if r.peak_mb is not None else ''
        iqr = f'{r.quantile(0.25) * 1e3:.1f}-{r.quantile(0.75) * 1e3:.1f}'
        gmacs = f'{r.gmacs_per_s:.1f}' if r.gmacs_per_s is not None else ''
        faults = f'{r.median_page_faults:.0f}' if r.median_page_faults is not None else ''
        share = calibration_share(r, report.calibration, report.dtype)
        share_text = f'{100 * share:.0f}%' if share is not None else ''
        lines.append(
            f'{r.model:<{name_width}} {r.mode:<8} {f"{r.height}x{r.width}":>9} {r.batch:>5} '
            f'{r.median_ms:>10.1f} {iqr:>15} '
            f'{f"{min(r.times) * 1e3:.1f}-{max(r.times) * 1e3:.1f}":>17} '
            f'{r.batch * 1000 / r.median_ms:>7.1f} {faults:>7} {gmacs:>7} {share_text:>6} '
            f'{speedup:>6} '
            f'{peak:>8}'
        )
        if r.filter_share:
            shares = sorted(s for s, _ in r.filter_share)
            fastest = min(r.filter_share, key=lambda item: item[1])
            notes.append(
                f'spectral filter time inside the forward of {r.model} '
                f'{r.height}x{r.width} batch {r.batch} (hooks): median '
                f'{100 * statistics.median(shares):.1f}%, range '
                f'{100 * shares[0]:.1f}-{100 * shares[-1]:.1f}%, in the fastest '
                f'(least disturbed) forward {100 * fastest[0]:.1f}% of '
                f'{1000 * fastest[1]:.1f} ms'
            )
        if r.compile_s is not None:
            notes.append(
                f'compile time of {r.model} {r.height}x{r.width} batch {r.batch}: '
                f'{r.compile_s:.1f} s (torch.compile, inductor, frozen weights; '
                'once per input shape, before the timed calls)'
            )
        bare = by_key.get((f'spanet-nofilter:{arch}',) + key)
        if kind == 'spanet' and bare:
            whole = 1 - bare.median_ms / r.median_ms
            # Each round timed the two back to back: the median of the per-round shares is
            # the least affected by load that changes between rounds.
            paired = statistics.median(1 - b / a for a, b in zip(r.times, bare.times))
            notes.append(
                f'spectral filter share of {r.model} {r.mode} {r.height}x{r.width} '
                f'batch {r.batch} (with vs without): {100 * paired:.1f}% (median '
                f'of per-round pairs); {100 * whole:.1f}% (ratio of medians); '
                f'{100 * (1 - min(bare.times) / min(r.times)):.1f}% (ratio of '
                f'minima)'
            )
        cp = by_key.get((f'{kind}-cp:{arch}',) + key)
        if kind in ('spanet', 'spanetv2') and cp and cp.peak_mb and r.peak_mb:
            notes.append(
                f'with_cp peak memory of {r.model} {r.mode} {r.height}x{r.width} '
                f'batch {r.batch}: {100 * cp.peak_mb / r.peak_mb:.0f}% of without'
            )
    notes.append(
        "GMAC/s: the forward's MACs as tools/analysis/get_flops.py counts them (a "
        f'training step as {TRAIN_STEP_FORWARDS} forwards) over the median time; '
        '"of cal": 2 x MAC/s over the calibration GEMM\'s FLOP/s in the same dtype'
    )
    notes.append(
        "faults: median minor page faults per call (the whole process's); memory "
        'mapped afresh for each call costs time, and how much a contender gets depends '
        "on what the process freed before (glibc's moving mmap threshold)"
    )
    notes.append(f'allocator: {env.get("allocator", "as found")}')
    notes.append(
        f'load average (1 min) at start {env["loadavg"][0]:.2f}, at end '
        f'{env.get("loadavg_end", env["loadavg"])[0]:.2f}'
    )
    return '\n'.join(lines + [''] + notes)


def _region_words(env: dict) -> str:
    region = env.get('autocast_region')
    if region == 'run':
        return ' (autocast: one region around all timed calls of a setting)'
    return ' (autocast: a region around each call)' if region == 'call' else ''


if __name__ == '__main__':
    # The child process of peak_memory_mb: one JSON argument, the peak growth on stdout.
    print(_memory_child(json.loads(sys.argv[1])))
