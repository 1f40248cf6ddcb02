"""CPU inference of exported backbones: PyTorch eager against ONNX Runtime and OpenVINO.

What ``tools/analysis/runtime_benchmark.py`` runs. Each contender is a catalogued backbone
(:mod:`spanet_tools.catalogue`, ``FAMILY:ARCH``: ``spanet:s``, ``spanetv2:s18_pure``,
``convnext:tiny``, ...), built with a fixed seed and exported the way
``tools/deployment/export_onnx.py backbone`` exports it (:func:`spanet_mm.deployment.onnx.
export_onnx`: one file with dynamic batch, height and width; SPANetV2's ExSPAM filter as real
products). The same module then runs in three runtimes:

- ``pytorch``: eager, without autograd (ExSPAM's filter through ``torch.fft``);
- ``onnxruntime``: the file in ONNX Runtime's CPU provider (its dynamic shape);
- ``openvino``: the file in OpenVINO's CPU plugin, reshaped to the timed input size before it
  is compiled (as a deployment at one size would); ``openvino-dynamic`` keeps the file's
  dynamic shape;
- in bfloat16, where the CPU has bfloat16 units (:func:`bfloat16_support`; ONNX Runtime's CPU
  provider has no bfloat16 kernels): ``pytorch-bf16`` (eager under autocast, a region per
  call) and ``openvino-bf16`` (OpenVINO's bf16 inference precision), each compared with
  ``pytorch-bf16``.

Every runtime gets the same number of threads (``threads``: intra-op threads, one stream, no
inter-op parallelism, latency hint) and, so that runtimes interleaved in one process do not
take the cores from each other between calls, idle threads that sleep instead of spinning:
ONNX Runtime's ``session.intra_op.allow_spinning = 0`` here, and ``OMP_WAIT_POLICY=PASSIVE``
for PyTorch's OpenMP pool, which the tool sets before torch is imported.

Method and calibration are :mod:`spanet_tools.analysis.benchmark`'s: glibc's allocator fixed
(:func:`~spanet_tools.analysis.benchmark.steady_allocator`), a float32 GEMM timed first
(GFLOP/s), then round after round every (contender, runtime) pair runs once in turn, every
other round in reverse order (:func:`~spanet_tools.analysis.benchmark.interleaved_timings`).
Reported per input size: each pair's median and interquartile range, its achieved share of the
calibration (from the headline MACs of ``tools/analysis/get_flops.py``), its speed-up over
PyTorch eager and its speed against the baseline (ConvNeXt-T) in the same runtime, and the
largest difference of its first output from PyTorch's (a check that the timed file computes
the timed model).

Exported files are cached in ``work_dir`` under the contender's name and the exporter, and
reused when the file is there: the fixed seed makes the weights the same.
"""

import functools
import math
import os
import os.path as osp
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from spanet_mm.codebases import TensorOutputs
from spanet_mm.deployment.onnx import export_onnx, runtime_session
from spanet_mm.models.exspam import ExSPAM, real_products
from spanet_mm.models.real_dft import filter_spectrum_macs

from ..catalogue import build_backbone
from .benchmark import (
    CALIBRATION_SIZE,
    calibrate,
    environment,
    forward_macs,
    interleaved_timings,
    quantile,
    steady_allocator,
)

DEFAULT_MODELS = ('spanet:s', 'spanetv2:s18_pure', 'spanetv2:s18_hybrid', 'convnext:tiny')
BASELINE = 'convnext:tiny'
RUNTIMES = (
    'pytorch',
    'onnxruntime',
    'openvino',
    'openvino-dynamic',
    'pytorch-bf16',
    'openvino-bf16',
)
DEFAULT_RUNTIMES = ('pytorch', 'onnxruntime', 'openvino')
# The bfloat16 runtimes, by the runtime whose bfloat16 support decides (bfloat16_support).
BFLOAT16_RUNTIMES = {'pytorch-bf16': 'pytorch', 'openvino-bf16': 'openvino'}
RUNTIME_LABELS = {
    'pytorch': 'PyTorch eager',
    'onnxruntime': 'ONNX Runtime',
    'openvino': 'OpenVINO',
    'openvino-dynamic': 'OpenVINO (dynamic shape)',
    'pytorch-bf16': 'PyTorch eager, bfloat16',
    'openvino-bf16': 'OpenVINO, bfloat16',
}


def eager_of(runtime: str) -> str:
    """The PyTorch eager runtime a runtime is compared with: of the same precision."""
    return 'pytorch-bf16' if runtime in BFLOAT16_RUNTIMES else 'pytorch'


def precision_of(runtime: str) -> str:
    return 'bfloat16' if runtime in BFLOAT16_RUNTIMES else 'float32'


EXPORT_SHAPE = (224, 224)
SEED = 0
# The feature sizes ExSPAM sees: SPANetV2's four stages (strides 4 to 32) at these inputs,
# with the stages' widths.
FILTER_INPUTS = ((224, 224), (512, 512), (800, 1216))
FILTER_STRIDES = (4, 8, 16, 32)
FILTER_CHANNELS = (64, 128, 320, 512)


@dataclass
class Timing:
    """One contender in one runtime at one input size: seconds per call, round by round."""

    model: str
    runtime: str
    height: int
    width: int
    batch: int
    times: List[float] = field(default_factory=list)
    macs: Optional[float] = None
    max_abs_diff: Optional[float] = None  # first output against PyTorch eager

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.times)

    @property
    def iqr_ms(self) -> Tuple[float, float]:
        return 1000 * quantile(self.times, 0.25), 1000 * quantile(self.times, 0.75)

    def calibration_share(self, gflops: Optional[float]) -> Optional[float]:
        """Achieved FLOP/s at the median time as a share of the calibration GEMM's (of the
        precision the runtime computes in)."""
        if self.macs is None or not gflops:
            return None
        return 2 * self.macs / (self.median_ms / 1000) / 1e9 / gflops

    def to_json(self, gflops: Optional[float] = None) -> dict:
        return dict(
            model=self.model,
            runtime=self.runtime,
            height=self.height,
            width=self.width,
            batch=self.batch,
            median_ms=self.median_ms,
            iqr_ms=list(self.iqr_ms),
            times_s=self.times,
            macs=self.macs,
            calibration_share=self.calibration_share(gflops),
            max_abs_diff=self.max_abs_diff,
        )


@dataclass
class RuntimeReport:
    """Everything one run measured."""

    timings: List[Timing]
    calibration: Dict[str, float]
    bfloat16: Dict[str, str]
    environment: dict
    exports: Dict[str, dict]
    baseline: Optional[str] = BASELINE

    def to_json(self) -> dict:
        return dict(
            environment=self.environment,
            calibration_gflops=self.calibration,
            bfloat16=self.bfloat16,
            exports=self.exports,
            baseline=self.baseline,
            timings=[
                t.to_json(self.calibration.get(precision_of(t.runtime))) for t in self.timings
            ],
        )


# -- what the CPU and the runtimes offer ------------------------------------------------------


def cpu_flags() -> List[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return line.split(':', 1)[1].split()
    except OSError:
        pass
    return []


def bfloat16_support() -> Dict[str, str]:
    """Per runtime, whether it runs bfloat16 on this CPU's own bfloat16 units, and why not.

    Returns:
        dict: runtime -> ``'yes'`` or the reason it is not timed in bfloat16.
    """
    flags = set(cpu_flags())
    native = sorted(flags & {'avx512_bf16', 'amx_bf16'})
    cpu = (
        f'the CPU has {", ".join(native)}'
        if native
        else 'the CPU has no bfloat16 units (neither avx512_bf16 nor amx_bf16)'
    )
    support = {
        'pytorch': 'yes' if native else f'no: {cpu} (autocast would emulate it)',
        'onnxruntime': 'no: its CPU provider has no bfloat16 kernels for Conv and MatMul',
    }
    try:
        # The runtimes are the optional [deploy] extra: imported when asked about.
        import openvino as ov

        capabilities = ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
        support['openvino'] = (
            'yes'
            if 'BF16' in capabilities
            else f'no: the CPU plugin lists {", ".join(capabilities)} (no BF16)'
        )
    except ImportError:
        support['openvino'] = 'no: openvino is not installed'
    return support


# -- the contenders ---------------------------------------------------------------------------


def file_name(name: str, exporter: str) -> str:
    """The cached file of contender ``name``: ``spanet_s.dynamo.onnx`` for ``spanet:s``."""
    return f'{name.replace(":", "_").replace("/", "_")}.{exporter}.onnx'


def build_seeded(name: str, arch: Optional[dict] = None) -> nn.Module:
    """The contender ``name`` with the weights of :data:`SEED` (the same at every build)."""
    torch.manual_seed(SEED)
    return build_backbone(name, arch)


def export_cached(
    name: str,
    model: nn.Module,
    work_dir: str,
    exporter: str = 'dynamo',
    log: Callable[[str], None] = print,
) -> Tuple[str, Optional[float]]:
    """The exported file of ``model`` in ``work_dir``, exported if it is not there yet.

    Returns:
        tuple: The path, and the seconds the export took (None for a cached file).
    """
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, file_name(name, exporter))
    if osp.isfile(path):
        log(f'  {name}: cached {path}')
        return path, None
    log(f'  {name}: exporting with the {exporter} exporter ...')
    start = time.perf_counter()
    partial = path + '.partial'
    export_onnx(TensorOutputs(model).eval(), 'backbone', partial, EXPORT_SHAPE, exporter=exporter)
    os.replace(partial, path)
    seconds = time.perf_counter() - start
    log(f'  {name}: exported in {seconds:.0f} s')
    return path, seconds


def make_runtime_call(
    runtime: str, model: nn.Module, path: str, x: torch.Tensor, threads: int
) -> Tuple[Callable[[], list], Callable[[], None]]:
    """``(outputs(), step())`` of one contender in ``runtime`` on ``x``: ``outputs`` returns
    the first output as a tensor (for the check), ``step`` one timed call."""
    if runtime in ('pytorch', 'pytorch-bf16'):
        # bfloat16 as autocast runs it: a region per call.
        amp = runtime == 'pytorch-bf16'

        def run():
            with torch.no_grad(), torch.autocast('cpu', torch.bfloat16, enabled=amp):
                return model(x)

        return (lambda: run()[0].float()), run
    array = x.numpy()
    if runtime == 'onnxruntime':
        session = runtime_session('onnxruntime', path, threads)
    elif runtime in ('openvino', 'openvino-dynamic', 'openvino-bf16'):
        static = None if runtime == 'openvino-dynamic' else tuple(x.shape)
        precision = 'bf16' if runtime == 'openvino-bf16' else 'f32'
        session = runtime_session('openvino', path, threads, static, precision)
    else:
        raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
    return (lambda: torch.from_numpy(session(array)[0])), (lambda: session(array))


def check_runtimes(runtimes: Sequence[str]) -> None:
    """Refuse unknown runtimes, or a list without PyTorch (the ratios' reference)."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f'runtimes must be among {RUNTIMES}, got {unknown}')
    if 'pytorch' not in runtimes:
        raise ValueError(f'the runtimes must include pytorch (the reference), got {runtimes}')
    if 'openvino-bf16' in runtimes and 'pytorch-bf16' not in runtimes:
        raise ValueError(
            f'openvino-bf16 is compared with pytorch-bf16: list both, got {list(runtimes)}'
        )


def run_runtime_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    sizes: Sequence[Tuple[int, int]] = ((224, 224), (512, 512)),
    runtimes: Sequence[str] = DEFAULT_RUNTIMES,
    work_dir: str = 'work_dirs/runtime_benchmark',
    exporter: str = 'dynamo',
    threads: int = 2,
    rounds: int = 10,
    warmup: int = 2,
    batch: int = 1,
    calibration_size: int = CALIBRATION_SIZE,
    archs: Optional[Mapping[str, dict]] = None,
    baseline: Optional[str] = BASELINE,
    bfloat16: bool = False,
    steady: bool = True,
    log: Callable[[str], None] = print,
) -> RuntimeReport:
    """Export every contender (or reuse its cached file) and time it in every runtime.

    Args:
        models (Sequence[str]): Catalogued backbones, ``FAMILY:ARCH``.
        sizes (Sequence[tuple]): Input sizes ``(H, W)``.
        runtimes (Sequence[str]): Among :data:`RUNTIMES`; must include ``pytorch``.
        work_dir (str): Where the exported files are cached.
        exporter (str): ``'dynamo'`` or ``'torchscript'`` (see
            :func:`spanet_mm.deployment.onnx.export_onnx`).
        threads (int): Threads of every runtime.
        rounds (int): Timed rounds. warmup (int): Untimed rounds before them.
        batch (int): Batch size.
        calibration_size (int): Side of the calibration GEMM.
        archs (Mapping[str, dict], optional): Custom arch dicts by contender name (tiny
            models in tests).
        baseline (str, optional): The contender the others are compared with in each runtime.
        bfloat16 (bool): Also time the bfloat16 runtimes (:data:`BFLOAT16_RUNTIMES`) that
            this CPU runs on its own bfloat16 units (:func:`bfloat16_support`).
        steady (bool): Fix glibc's allocator first (see the benchmark).
        log (callable): Progress lines.
    """
    check_runtimes(runtimes)
    support = bfloat16_support()
    if bfloat16:
        runtimes = list(runtimes) + [
            r for r, base in BFLOAT16_RUNTIMES.items() if support[base] == 'yes'
        ]
        runtimes = list(dict.fromkeys(runtimes))
        check_runtimes(runtimes)
    if rounds < 1 or warmup < 0 or threads < 1 or batch < 1:
        raise ValueError(
            f'rounds, threads and batch must be >= 1 and warmup >= 0, got rounds={rounds}, '
            f'warmup={warmup}, threads={threads}, batch={batch}'
        )
    if steady:
        steady_allocator()
    torch.set_num_threads(threads)
    env = environment()
    env['omp_wait_policy'] = os.environ.get('OMP_WAIT_POLICY', '(unset)')
    env.update(_runtime_versions())
    dtypes = [torch.float32] + [torch.bfloat16] * any(r in BFLOAT16_RUNTIMES for r in runtimes)
    log(f'calibrating ({calibration_size}x{calibration_size} GEMM) ...')
    calibration = calibrate(dtypes, calibration_size)
    log('  ' + ', '.join(f'{k} GEMM {v:.1f} GFLOP/s' for k, v in calibration.items()))
    archs = archs or {}
    built: Dict[str, nn.Module] = {}
    paths: Dict[str, str] = {}
    exports: Dict[str, dict] = {}
    needs_file = any(r != 'pytorch' for r in runtimes)
    for name in models:
        built[name] = build_seeded(name, archs.get(name))
        if needs_file:
            paths[name], seconds = export_cached(name, built[name], work_dir, exporter, log)
            exports[name] = dict(path=paths[name], exporter=exporter, export_s=seconds)
    timings = []
    for height, width in sizes:
        x = torch.randn(batch, 3, height, width)
        steps, outputs, macs = {}, {}, {}
        for name in models:
            macs[name] = forward_macs(built[name], x)
            for runtime in runtimes:
                outputs[name, runtime], steps[name, runtime] = make_runtime_call(
                    runtime, built[name], paths.get(name, ''), x, threads
                )
        diffs = {}
        for name in models:
            reference = outputs[name, 'pytorch']()
            for runtime in runtimes:
                diffs[name, runtime] = (outputs[name, runtime]() - reference).abs().max().item()
        log(f'timing {height}x{width}, batch {batch}: {rounds} rounds of {len(steps)} calls')
        times, _ = interleaved_timings(steps, rounds, warmup)
        for (name, runtime), seconds in times.items():
            timing = Timing(name, runtime, height, width, batch, seconds, macs[name])
            timing.max_abs_diff = diffs[name, runtime]
            timings.append(timing)
            log(f'  {name} {runtime}: {timing.median_ms:.1f} ms')
    env['loadavg_end'] = os.getloadavg()
    return RuntimeReport(
        timings,
        calibration,
        support,
        env,
        exports,
        baseline if baseline in models else None,
    )


def _runtime_versions() -> Dict[str, str]:
    versions = {}
    try:
        # The runtimes are the optional [deploy] extra: imported when they are timed.
        import onnxruntime

        versions['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        # (as above)
        import openvino

        versions['openvino'] = openvino.get_version()
    except ImportError:
        pass
    return versions


# -- the report -------------------------------------------------------------------------------

TABLE_COLUMNS = (
    'model',
    'input',
    'runtime',
    'median ms',
    'IQR ms',
    'share of GEMM',
    'vs eager',
    'vs baseline',
    'max |diff|',
)


def table_rows(report: RuntimeReport) -> List[List[str]]:
    """The rows of the report's table, one per (input size, model, runtime), as strings:
    ``vs eager`` is the PyTorch eager time over this one (> 1: faster than eager),
    ``vs baseline`` the baseline's time in the same runtime over this one (>= 1: at least as
    fast as the baseline)."""
    by_key = {(t.model, t.runtime, t.height, t.width): t for t in report.timings}
    rows = []
    for t in report.timings:
        eager = by_key.get((t.model, eager_of(t.runtime), t.height, t.width))
        eager = eager or by_key[t.model, 'pytorch', t.height, t.width]
        base = by_key.get((report.baseline, t.runtime, t.height, t.width))
        share = t.calibration_share(report.calibration.get(precision_of(t.runtime)))
        low, high = t.iqr_ms
        rows.append(
            [
                t.model,
                f'{t.height}x{t.width}',
                RUNTIME_LABELS[t.runtime],
                f'{t.median_ms:.1f}',
                f'{low:.1f}-{high:.1f}',
                '' if share is None else f'{100 * share:.0f}%',
                f'{eager.median_ms / t.median_ms:.2f}x',
                '' if base is None else f'{base.median_ms / t.median_ms:.2f}x',
                '' if t.max_abs_diff is None else f'{t.max_abs_diff:.1e}',
            ]
        )
    order = {name: i for i, name in enumerate(dict.fromkeys(t.model for t in report.timings))}
    runtime_order = {r: i for i, r in enumerate(RUNTIMES)}
    rows.sort(
        key=lambda row: (
            [int(s) for s in row[1].split('x')],
            order[row[0]],
            runtime_order[_runtime_of(row[2])],
        )
    )
    return rows


def _runtime_of(label: str) -> str:
    return next(r for r, text in RUNTIME_LABELS.items() if text == label)


def goal_lines(report: RuntimeReport) -> List[str]:
    """Per input size, precision and contender: its fastest runtime in that precision and,
    for all but the baseline, whether it is faster there than in PyTorch eager (of the same
    precision) and at least as fast as the baseline in that runtime (the goal)."""
    lines = []
    sizes = dict.fromkeys((t.height, t.width) for t in report.timings)
    for height, width in sizes:
        here = [t for t in report.timings if (t.height, t.width) == (height, width)]
        for precision in dict.fromkeys(precision_of(t.runtime) for t in here):
            timed = [t for t in here if precision_of(t.runtime) == precision]
            for name in dict.fromkeys(t.model for t in timed):
                lines.append(_goal_line(report, timed, name, height, width, precision))
    return lines


def _goal_line(
    report: RuntimeReport, timed: List[Timing], name: str, height: int, width: int, precision: str
) -> str:
    mine = {t.runtime: t for t in timed if t.model == name}
    fastest = min(mine.values(), key=lambda t: t.median_ms)
    eager = mine.get(eager_of(fastest.runtime))
    line = (
        f'{height}x{width} {precision} {name}: fastest in {RUNTIME_LABELS[fastest.runtime]} '
        f'({fastest.median_ms:.1f} ms'
    )
    if eager is not None:
        line += f', {eager.median_ms / fastest.median_ms:.2f}x eager'
    base = next(
        (t for t in timed if t.model == report.baseline and t.runtime == fastest.runtime), None
    )
    if base is None or name == report.baseline or eager is None:
        return line + ')'
    ratio = base.median_ms / fastest.median_ms
    met = ratio >= 1 and eager.median_ms > fastest.median_ms
    return line + f', {ratio:.2f}x {report.baseline} there): goal {"met" if met else "not met"}'


def format_report(report: RuntimeReport) -> str:
    """The calibration, the bfloat16 findings, the table (Markdown) and the goal lines."""
    env = report.environment
    lines = [
        f'CPU: {env.get("cpu")}, {env.get("cpus")} CPUs, {env.get("threads")} threads; '
        f'torch {env.get("torch")}, onnxruntime {env.get("onnxruntime", "-")}, '
        f'openvino {env.get("openvino", "-")}; OMP_WAIT_POLICY={env.get("omp_wait_policy")}',
        f'load average at start {_load(env.get("loadavg"))}, '
        f'at end {_load(env.get("loadavg_end"))}',
        'calibration: '
        + ', '.join(f'{k} GEMM {v:.1f} GFLOP/s' for k, v in report.calibration.items()),
        'bfloat16: ' + '; '.join(f'{k}: {v}' for k, v in report.bfloat16.items()),
    ]
    for name, export in report.exports.items():
        seconds = export.get('export_s')
        lines.append(
            f'export {name}: {export["exporter"]}, '
            + ('cached file' if seconds is None else f'{seconds:.0f} s')
        )
    lines.append('')
    lines.append('| ' + ' | '.join(TABLE_COLUMNS) + ' |')
    lines.append('|' + '---|' * len(TABLE_COLUMNS))
    lines += ['| ' + ' | '.join(row) + ' |' for row in table_rows(report)]
    lines.append('')
    lines += goal_lines(report)
    return '\n'.join(lines)


def _load(loadavg) -> str:
    return '-' if not loadavg else ' '.join(f'{v:.2f}' for v in loadavg)


# -- the spectral filter: products against the FFT -------------------------------------------


@dataclass
class FilterCost:
    """ExSPAM's filter on one ``(1, C, H, W)`` map: the products' MACs and both forms' times."""

    height: int
    width: int
    channels: int
    product_macs: int
    fft_ms: float
    products_ms: float
    onnxruntime_ms: Optional[float] = None

    @property
    def fft_flops_estimate(self) -> float:
        """The usual ``2.5 N log2 N`` real FLOPs of a real transform, forward and inverse."""
        n = self.height * self.width
        return self.channels * 2 * 2.5 * n * max(1.0, math.log2(n))


def filter_feature_sizes(
    inputs: Sequence[Tuple[int, int]] = FILTER_INPUTS,
) -> List[Tuple[int, int, int]]:
    """``(H, W, C)`` of every SPANetV2 stage (ExSPAM's maps) at each input size."""
    return [
        (height // stride, width // stride, channels)
        for height, width in inputs
        for stride, channels in zip(FILTER_STRIDES, FILTER_CHANNELS)
    ]


def time_filter_costs(
    feature_sizes: Sequence[Tuple[int, int, int]],
    threads: int = 2,
    rounds: int = 10,
    warmup: int = 2,
    onnxruntime: bool = True,
    work_dir: str = 'work_dirs/runtime_benchmark',
    log: Callable[[str], None] = print,
) -> List[FilterCost]:
    """Time :meth:`ExSPAM.modulate_spectrum` as the FFT and as real products (eager, batch 1)
    and, with ``onnxruntime``, the products exported alone, at each ``(H, W, C)``."""
    torch.set_num_threads(threads)
    costs = []
    for height, width, channels in feature_sizes:
        x = torch.randn(1, channels, height, width)
        gain = torch.rand(channels, height, width // 2 + 1)

        steps = {
            'fft': functools.partial(_filter_call, x, gain, False),
            'products': functools.partial(_filter_call, x, gain, True),
        }
        if onnxruntime:
            steps['onnxruntime'] = _filter_session(x, gain, threads, work_dir)
        times, _ = interleaved_timings(steps, rounds, warmup)
        median = {k: 1000 * statistics.median(v) for k, v in times.items()}
        cost = FilterCost(
            height,
            width,
            channels,
            channels * filter_spectrum_macs(height, width),
            median['fft'],
            median['products'],
            median.get('onnxruntime'),
        )
        costs.append(cost)
        log(
            f'  {height}x{width}x{channels}: fft {cost.fft_ms:.2f} ms, products '
            f'{cost.products_ms:.2f} ms'
            + ('' if cost.onnxruntime_ms is None else f', ONNX Runtime {cost.onnxruntime_ms:.2f}')
        )
    return costs


def _filter_call(x: torch.Tensor, gain: torch.Tensor, products: bool) -> None:
    """One eager call of ExSPAM's filter, as the FFT or as real products."""
    with torch.no_grad(), real_products(products):
        ExSPAM.modulate_spectrum(x, gain)


class _Filter(nn.Module):
    """The filter alone, with its gain as a weight (what an exported ExSPAM computes)."""

    def __init__(self, gain: torch.Tensor) -> None:
        super().__init__()
        self.gain = nn.Parameter(gain, requires_grad=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        return (ExSPAM.modulate_spectrum(x, self.gain),)


def _filter_session(
    x: torch.Tensor, gain: torch.Tensor, threads: int, work_dir: str
) -> Callable[[], None]:
    """One ONNX Runtime call of the products exported for ``x``'s size (TorchScript-based
    exporter: seconds; the filter's graph is the same as in a whole model's file)."""
    os.makedirs(work_dir, exist_ok=True)
    _, channels, height, width = x.shape
    path = osp.join(work_dir, f'filter_{height}x{width}x{channels}.onnx')
    module = _Filter(gain).eval()
    with torch.no_grad(), real_products(), warnings.catch_warnings():
        # The TorchScript-based exporter's deprecation notice does not concern the graph.
        warnings.simplefilter('ignore')
        torch.onnx.export(
            module,
            (x,),
            path,
            input_names=['input'],
            output_names=['out'],
            opset_version=18,
            dynamo=False,
        )
    session = runtime_session('onnxruntime', path, threads)
    array = x.numpy()
    return lambda: session(array)


FILTER_COLUMNS = (
    'map (H x W x C)',
    'products MMAC',
    'FFT MFLOP (est.)',
    'PyTorch FFT ms',
    'PyTorch products ms',
    'ONNX Runtime products ms',
    'products / FFT (PyTorch)',
)


def format_filter_costs(costs: Sequence[FilterCost]) -> str:
    """The filter's costs as a Markdown table."""
    lines = ['| ' + ' | '.join(FILTER_COLUMNS) + ' |', '|' + '---|' * len(FILTER_COLUMNS)]
    for c in costs:
        lines.append(
            f'| {c.height} x {c.width} x {c.channels} | {c.product_macs / 1e6:.1f} | '
            f'{c.fft_flops_estimate / 1e6:.1f} | {c.fft_ms:.2f} | {c.products_ms:.2f} | '
            + ('-' if c.onnxruntime_ms is None else f'{c.onnxruntime_ms:.2f}')
            + f' | {c.products_ms / c.fft_ms:.2f}x |'
        )
    return '\n'.join(lines)
