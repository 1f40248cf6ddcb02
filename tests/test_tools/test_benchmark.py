"""The benchmark behind tools/analysis/benchmark.py (spanet_tools.analysis.benchmark): contenders,
interleaved timing, the GEMM calibration and the achieved GMAC/s. No assertion on speed."""

import copy
import json
import mmap
import os
import statistics
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from spanet_tools.analysis.benchmark import (
    Result,
    build_contender,
    build_contenders,
    calibrate,
    calibration_share,
    format_report,
    gemm_gflops,
    interleaved_timings,
    peak_memory_mb,
    reference_of,
    run_benchmark,
    split_variant,
    time_contenders,
    timing_order,
)
from spanet_tools.analysis.flops import count_complexity
from spanet_tools.catalogue import build_backbone, without_filters

from helpers.commands import REPO_ROOT


def test_filterless_model_is_timed_right_after_its_partner():
    order = timing_order(
        ['spanet:s', 'reference:s', 'spanet-nofilter:s', 'convnext:tiny', 'spanet-nofilter:m']
    )
    assert order == [
        'spanet:s',
        'spanet-nofilter:s',
        'reference:s',
        'convnext:tiny',
        'spanet-nofilter:m',
    ]


def test_each_generation_is_compared_with_its_own_reference():
    assert reference_of('spanet:s') == 'reference:s'
    assert reference_of('spanet-cp:m') == 'reference:m'
    assert reference_of('spanetv2:s18_hybrid') == 'reference-v2:s18_hybrid'
    assert reference_of('spanetv2-cp:s36_pure') == 'reference-v2:s36_pure'
    assert reference_of('convnext:tiny') is None and reference_of('config') is None


def test_calibration_gemm():
    gflops = gemm_gflops(torch.float32, size=64, reps=2)
    assert gflops > 0
    both = calibrate([torch.float32, torch.bfloat16], size=32, reps=1)
    assert set(both) == {'float32', 'bfloat16'} and all(v > 0 for v in both.values())
    with pytest.raises(ValueError, match='positive'):
        gemm_gflops(torch.float32, size=0)


def test_achieved_rate_and_its_share_of_the_calibration():
    forward = Result('spanet:s', 'forward', 64, 64, 1, times=[0.5, 0.25, 1.0], macs=2e9)
    assert forward.gmacs_per_s == pytest.approx(2 / 0.5)  # at the median time
    # 4 GMAC/s is 8 GFLOP/s, a fifth of a 40 GFLOP/s GEMM; a dtype not calibrated has none.
    assert calibration_share(forward, {'float32': 40.0}, 'float32') == pytest.approx(0.2)
    assert calibration_share(forward, {'float32': 40.0}, 'bfloat16') is None
    # A training step does the work of three forwards.
    train = Result('spanet:s', 'train', 64, 64, 1, times=[0.5], macs=2e9)
    assert train.gmacs_per_s == pytest.approx(3 * 2 / 0.5)
    assert Result('x', 'forward', 1, 1, 1, times=[1.0]).gmacs_per_s is None


def test_contenders_are_built_by_name():
    built = build_contenders(['spanet:s', 'spanet-nofilter:s', 'convnext:atto'])
    assert list(built) == ['spanet:s', 'spanet-nofilter:s', 'convnext:atto']
    # The filter-less contender is the very model it is compared with, minus its filters.
    assert all(
        a is b
        for a, b in zip(built['spanet:s'].parameters(), built['spanet-nofilter:s'].parameters())
    )


def test_benchmark_run(tmp_path, tiny_arch):
    spanet = build_backbone('spanet', arch=tiny_arch)
    contenders = {
        'spanet:tiny': spanet,
        'reference:tiny': build_backbone('reference', arch=tiny_arch),
        'spanet-nofilter:tiny': without_filters(spanet),
    }
    lines = []
    report = time_contenders(
        contenders,
        sizes=[(64, 96)],
        modes=['forward', 'train'],
        rounds=3,
        warmup=1,
        calibration_size=64,
        calibration_reps=1,
        log=lines.append,
    )
    assert {(r.model, r.mode) for r in report.results} == {
        (m, mode) for m in contenders for mode in ('forward', 'train')
    }
    assert set(report.calibration) == {'float32', 'bfloat16'} and report.dtype == 'float32'
    # The MACs are those of get_flops.py's counter for the same backbone and input.
    macs = count_complexity(spanet.eval(), (torch.randn(1, 3, 64, 96),)).flops
    for r in report.results:
        assert (r.height, r.width, len(r.times)) == (64, 96, 3)
        if r.model != 'spanet-nofilter:tiny':
            assert r.macs == macs  # the reference counts the same, without its FFTs
        assert r.gmacs_per_s == pytest.approx(
            r.macs * (3 if r.mode == 'train' else 1) / (r.median_ms / 1000) / 1e9
        )
    # Page faults are counted for every timed call.
    assert all(len(r.page_faults) == 3 and min(r.page_faults) >= 0 for r in report.results)
    share = [r for r in report.results if (r.model, r.mode) == ('spanet:tiny', 'forward')][0]
    # The hooks' share of each timed forward: a fraction, one per round.
    assert len(share.filter_share) == 3 and all(0 < s < 1 for s, _ in share.filter_share)

    table = format_report(report)
    assert table.startswith('calibration (') and 'float32 GEMM' in table
    assert 'bfloat16 GEMM' in table and 'the models ran in float32' in table
    assert 'spectral filter share of spanet:tiny forward 64x96 batch 1 (with vs without)' in table
    assert 'spectral filter time inside the forward of spanet:tiny 64x96' in table
    row = next(line for line in table.splitlines() if line.startswith('spanet:tiny '))
    # ... GMAC/s, share of the calibration, speed-up over the reference of the same arch.
    gmacs, share_text, speedup = row.split()[-3:]
    assert float(gmacs) == pytest.approx(share.gmacs_per_s, abs=0.06)
    assert share_text.endswith('%') and speedup.endswith('x')
    assert any(line.startswith('  done: spanet:tiny forward 64x96') for line in lines)

    saved = json.loads(json.dumps(report.to_json()))  # plain numbers all through
    first = saved['results'][0]
    assert first['calibration_share'] == pytest.approx(
        2 * first['gmacs_per_s'] / saved['calibration_gflops']['float32']
    )


def test_amp_weights_twin_is_its_base_in_the_autocast_dtype():
    built = build_contenders(['convnext:atto@amp-weights', 'convnext:atto'])
    assert list(built) == ['convnext:atto@amp-weights', 'convnext:atto']
    base, twin = built['convnext:atto'], built['convnext:atto@amp-weights']
    assert {p.dtype for p in base.parameters()} == {torch.float32}
    # Built from the base's very weights (whatever order they are listed in), converted.
    assert all(
        t.dtype == torch.bfloat16 and torch.equal(t, b.bfloat16())
        for t, b in zip(twin.parameters(), base.parameters())
    )
    assert reference_of('spanet:s@amp-weights') is None
    # Alone, a twin is built by name.
    alone = build_contender('spanet:s@amp-weights')
    assert {p.dtype for p in alone.parameters()} == {torch.bfloat16}


def test_amp_weights_twin_is_timed_under_autocast(tiny_arch):
    spanet = build_backbone('spanet', arch=tiny_arch)
    twin = copy.deepcopy(spanet).bfloat16()
    report = time_contenders(
        {'spanet:tiny': spanet, 'spanet:tiny@amp-weights': twin},
        sizes=[(64, 64)],
        rounds=2,
        warmup=0,
        amp=True,
        calibration_size=32,
        calibration_reps=1,
        log=lambda line: None,
    )
    base, bound = report.results
    assert bound.model == 'spanet:tiny@amp-weights' and bound.macs == base.macs > 0
    # The filter's hooks ran under the same autocast (bfloat16 weights take no float32
    # input without it).
    assert len(bound.filter_share) == 2 and all(0 < s < 1 for s, _ in bound.filter_share)
    rows = format_report(report).splitlines()
    head = next(line for line in rows if line.startswith('model '))
    row = next(line for line in rows if line.startswith('spanet:tiny@amp-weights '))
    assert head.index(' mode') == row.index(' forward')  # the columns line up


def test_amp_weights_need_amp_and_forward_mode():
    with pytest.raises(ValueError, match=r'run with amp \(--amp\)'):
        # Refused before anything is built (the config contender would fail to build).
        run_benchmark(['config@amp-weights'], rounds=1, log=lambda line: None)
    with pytest.raises(ValueError, match='forward mode only'):
        run_benchmark(
            ['spanet:s@amp-weights'],
            amp=True,
            modes=['forward', 'train'],
            rounds=1,
            log=lambda line: None,
        )
    with pytest.raises(ValueError, match='NAME@VARIANT, VARIANT one of amp-weights, cuda-graph'):
        run_benchmark(['spanet:s@fp8'], amp=True, rounds=1, log=lambda line: None)


class _CastsOf(TorchDispatchMode):
    """Counts the casts of one tensor (``aten._to_copy`` calls on it)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__()
        self.tensor, self.count = tensor, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0] is self.tensor:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _ConvCountingCasts(nn.Module):
    """A conv that counts how often autocast converts its weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.weight_casts = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled('cpu'):
            return self.conv(x)  # (the MAC count traces the model without autocast)
        with _CastsOf(self.conv.weight) as casts:
            out = self.conv(x)
        self.weight_casts += casts.count
        return out


@pytest.mark.parametrize('region, weight_casts', [('call', 4), ('run', 1)])
def test_autocast_region_around_each_call_or_the_whole_run(region, weight_casts):
    """autocast keeps the weights it casts until its region closes: with a region around
    each call the weight is converted at every call (1 warm-up + 3 timed), with one around
    the run once."""
    model = _ConvCountingCasts()
    report = time_contenders(
        {'config': model},
        sizes=[(16, 16)],
        rounds=3,
        warmup=1,
        amp=True,
        autocast_region=region,
        calibration_size=32,
        calibration_reps=1,
        log=lambda line: None,
    )
    assert model.weight_casts == weight_casts
    assert report.dtype == 'bfloat16' and report.environment['autocast_region'] == region
    words = {
        'call': 'a region around each call',
        'run': 'one region around all timed calls of a setting',
    }[region]
    assert f'the models ran in bfloat16 (autocast: {words})' in format_report(report)


def test_autocast_region_run_needs_amp_and_forward_mode():
    # Refused before anything is built (the config contender would fail to build).
    with pytest.raises(ValueError, match=r'needs amp \(--amp\)'):
        run_benchmark(['config'], autocast_region='run', rounds=1, log=lambda line: None)
    with pytest.raises(ValueError, match='forward mode only'):
        run_benchmark(
            ['config'],
            amp=True,
            autocast_region='run',
            modes=['train'],
            rounds=1,
            log=lambda line: None,
        )
    with pytest.raises(ValueError, match=r"one of \('call', 'run'\), got 'epoch'"):
        run_benchmark(
            ['config'], amp=True, autocast_region='epoch', rounds=1, log=lambda line: None
        )
    # The tool refuses it in its argument parser, with the same rule, before building any
    # model.
    tool = os.path.join(REPO_ROOT, 'tools', 'analysis', 'benchmark.py')
    proc = subprocess.run(
        [sys.executable, tool, '--models', 'config', '--autocast-region', 'run'],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        "autocast_region='run' (--autocast-region run) opens one autocast region around "
        'the run; it needs amp (--amp)' in proc.stderr
    )


def test_cuda_graph_variant_is_its_base_module():
    built = build_contenders(['convnext:atto@cuda-graph', 'convnext:atto'])
    assert list(built) == ['convnext:atto@cuda-graph', 'convnext:atto']
    assert built['convnext:atto@cuda-graph'] is built['convnext:atto']
    assert split_variant('spanet:s@cuda-graph') == ('spanet:s', 'cuda-graph')
    assert split_variant('spanet:s') == ('spanet:s', None)
    assert reference_of('spanet:s@cuda-graph') is None


def test_cuda_graph_variant_needs_cuda_and_forward_mode():
    # Refused before anything is built (the config contender would fail to build).
    with pytest.raises(ValueError, match=r'need a CUDA device \(--device cuda\), got cpu'):
        run_benchmark(['config@cuda-graph'], rounds=1, log=lambda line: None)
    with pytest.raises(ValueError, match='forward mode only'):
        run_benchmark(
            ['config@cuda-graph'], device='cuda', modes=['train'], rounds=1, log=lambda line: None
        )
    # Accepted in forward mode on CUDA: the build is reached (and fails for want of a config).
    with pytest.raises(ValueError, match='needs a config file'):
        run_benchmark(['config@cuda-graph'], device='cuda', rounds=1, log=lambda line: None)


@pytest.mark.slow
def test_compiled_variant_is_its_base_module_compiled_before_the_timing(one_stage_spanet):
    """``NAME@compiled`` times the very module ``NAME``, compiled with frozen weights before
    the timed calls; the report gives the compile time. A one-stage SPANet keeps the
    compilation short."""
    built = build_contenders(['convnext:atto@compiled', 'convnext:atto'])
    assert built['convnext:atto@compiled'] is built['convnext:atto']
    assert reference_of('spanet:s@compiled') is None
    model = one_stage_spanet
    lines = []
    report = time_contenders(
        {'spanet:one': model, 'spanet:one@compiled': model},
        sizes=[(32, 32)],
        rounds=2,
        warmup=1,
        amp=True,
        calibration_size=32,
        calibration_reps=1,
        log=lines.append,
    )
    eager, compiled = report.results
    assert compiled.model == 'spanet:one@compiled' and len(compiled.times) == 2
    assert compiled.macs == eager.macs > 0 and eager.compile_s is None
    # The first call compiled; the timed calls did not (each far shorter than compiling).
    assert compiled.compile_s > 0 and max(compiled.times) < compiled.compile_s
    # The filter's hooks cannot time compiled code: no share for it.
    assert eager.filter_share and not compiled.filter_share
    table = format_report(report)
    assert (
        f'compile time of spanet:one@compiled 32x32 batch 1: {compiled.compile_s:.1f} s '
        '(torch.compile, inductor, frozen weights'
    ) in table
    assert json.loads(json.dumps(report.to_json()))['results'][1]['compile_s'] == pytest.approx(
        compiled.compile_s
    )


def test_compiled_variant_needs_forward_mode():
    # Refused before anything is built (the config contender would fail to build).
    with pytest.raises(
        ValueError, match='config@compiled: variants are timed in forward mode only'
    ):
        run_benchmark(
            ['config@compiled'], modes=['forward', 'train'], rounds=1, log=lambda line: None
        )
    # Accepted in forward mode, with or without amp: the build is reached.
    for amp in (False, True):
        with pytest.raises(ValueError, match='needs a config file'):
            run_benchmark(['config@compiled'], amp=amp, rounds=1, log=lambda line: None)


def _touch_fresh_pages(size: int = 16 * 2**20) -> None:
    # An anonymous mapping of its own: fresh pages, whatever memory malloc holds free by now
    # (a large heap left by earlier tests can serve even 64 MiB without a fault).
    with mmap.mmap(-1, size) as block:
        block.write(b'\x01' * size)


def test_page_faults_are_counted_per_call():
    """A call that touches fresh memory is charged page faults; one that allocates nothing is
    charged fewer."""
    steps = {'touches 16 MiB': _touch_fresh_pages, 'idle': lambda: None}
    times, faults = interleaved_timings(steps, rounds=3, warmup=0)
    assert all(len(times[name]) == len(faults[name]) == 3 for name in steps)
    assert statistics.median(faults['touches 16 MiB']) > statistics.median(faults['idle'])


def test_steady_allocator_stops_fresh_pages_per_call():
    """In a process whose glibc maps (and unmaps) every block of 64 KiB or more, a call
    that allocates 8 MiB faults its pages in each time; after steady_allocator() it reuses
    the heap. Run in a child process: the setting lasts for the rest of the process."""
    script = textwrap.dedent("""
        import statistics, torch
        from spanet_tools.analysis.benchmark import minor_page_faults, steady_allocator
        def faults_per_call():
            counts = []
            for _ in range(5):
                before = minor_page_faults()
                torch.ones(2 * 2**20).sum()
                counts.append(minor_page_faults() - before)
            return statistics.median(counts)
        print(faults_per_call(), steady_allocator(), faults_per_call())
    """)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='65536')
    out = subprocess.run(
        [sys.executable, '-c', script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    before, taken, after = float(out[0]), out[1], float(out[2])
    assert taken == 'True'
    assert before >= 1000 and after < before / 10  # 2048 pages of 4 KiB


def test_benchmark_amp_runs_in_bfloat16(tiny_arch):
    report = time_contenders(
        {'spanet:tiny': build_backbone('spanet', arch=tiny_arch)},
        sizes=[(64, 64)],
        rounds=1,
        warmup=0,
        amp=True,
        calibration_size=32,
        calibration_reps=1,
        log=lambda line: None,
    )
    assert report.dtype == 'bfloat16'
    share = calibration_share(report.results[0], report.calibration, 'bfloat16')
    assert (
        share == report.results[0].summary(report.calibration, 'bfloat16')['calibration_share']
        and share > 0
    )


def test_benchmark_rejects_unknown_contenders():
    with pytest.raises(ValueError, match='FAMILY:ARCH'):
        run_benchmark(['resnet-50'], rounds=1, calibration_size=8, log=lambda line: None)
    with pytest.raises(ValueError, match='needs a config file'):
        run_benchmark(['config'], rounds=1, calibration_size=8, log=lambda line: None)
    with pytest.raises(ValueError, match='rounds must be'):
        run_benchmark(['spanet:s'], rounds=0, log=lambda line: None)


def test_peak_memory_in_a_fresh_process():
    """The child process runs from any working directory and reports a positive growth."""
    assert peak_memory_mb('spanet:s', 'train', (32, 32), 1) > 0
