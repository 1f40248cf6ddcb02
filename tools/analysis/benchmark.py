"""Speed and memory of SPANet backbones against the paper-literal reference and other backbones.

Examples::

    # forward, batch 1, SPANet-S against the reference, its filter-less self and ConvNeXt-T
    python tools/analysis/benchmark.py --sizes 224 512
    # a training step (forward, backward, SGD step) at 512x512, batch 2, with peak memory
    python tools/analysis/benchmark.py --mode train --sizes 512 --batch-sizes 2 \\
        --models spanet:s spanet-cp:s reference:s --memory
    # the backbone of a config, at a detection size
    python tools/analysis/benchmark.py --config configs/mmdet/retinanet_spanet_s_1x.py \\
        --models config reference:s --sizes 800x1216

Contenders (``--models``):

* ``spanet:ARCH``: this package's :class:`spanet_mm.SPANet` (all four stage outputs);
* ``spanet-cp:ARCH``: the same with ``with_cp=True`` (gradient checkpointing);
* ``spanet-nofilter:ARCH``: the same with every Spectral Pooling Filter replaced by the
  identity (everything else unchanged, and the very weights of ``spanet:ARCH`` when that is
  timed too), to give the filter's share of the time;
* ``reference:ARCH``: :class:`spanet_mm.reference.ReferenceSPANet`, the straightforward
  paper-literal model (complex FFT and ``fftshift``/``ifftshift`` per chunk, three filters
  and three 1x1 convs);
* ``convnext-t``, ``swin-t``, ``poolformer-s24``: MMPretrain backbones, all four stages;
* ``config``: the ``model.backbone`` of ``--config``.

The spectral filter's share of the forward time is given two ways: ``spanet:ARCH`` against
``spanet-nofilter:ARCH`` (timed back to back in every round; the median of the per-round
shares, and the ratios of medians and of minima), and, for every ``spanet:ARCH``
forward, by hooks timing the filter calls inside each forward (robust to load changes, as
both times come from the same forward; the hooks add a few microseconds per call).

Method: every contender is built once in this process; each round runs every contender once
in turn (interleaved, so that load changes hit all alike), after ``--warmup`` untimed calls
each. Reported: median, interquartile range and min/max of the wall-clock times of the
rounds, and throughput (images per second at the median). Models have random weights;
the speed does not depend on them.

``--memory`` runs each case again in a fresh Python process: one untimed call, then the
gradients are dropped, the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``) and
the growth of the peak resident set size (``VmHWM``) over the RSS before a second call is
reported: the memory the call itself needed (activations, gradients, allocator and oneDNN
scratch), not the weights. The child runs with a fixed glibc mmap threshold, so that freed
memory goes back to the system and the resident set follows the tensors in use.
"""
import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

SPANET_KINDS = ('spanet', 'spanet-cp', 'spanet-nofilter', 'reference')
OTHER_BACKBONES = ('convnext-t', 'swin-t', 'poolformer-s24')
DEFAULT_MODELS = ('spanet:s', 'reference:s', 'spanet-nofilter:s', 'convnext-t')


@dataclass
class Result:
    """Timings (seconds) of one contender in one setting."""
    model: str
    mode: str
    height: int
    width: int
    batch: int
    times: List[float] = field(default_factory=list)
    peak_mb: Optional[float] = None
    filter_share: List[Tuple[float, float]] = field(default_factory=list)  # (share, s)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.times)
        pos = q * (len(ordered) - 1)
        low = int(pos)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (pos - low) * (ordered[high] - ordered[low])

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.times)

    def summary(self) -> dict:
        return dict(
            model=self.model, mode=self.mode, height=self.height, width=self.width,
            batch=self.batch, median_ms=self.median_ms,
            q1_ms=1000 * self.quantile(0.25), q3_ms=1000 * self.quantile(0.75),
            min_ms=1000 * min(self.times), max_ms=1000 * max(self.times),
            images_per_s=self.batch * 1000 / self.median_ms, rounds=len(self.times),
            peak_mb=self.peak_mb, times_ms=[1000 * t for t in self.times],
            filter_share=self.filter_share)


# -- building contenders --------------------------------------------------------------------

def build_backbone(name: str, config: Optional[str] = None) -> nn.Module:
    """Build a contender by name (see the module docstring), in eval mode."""
    kind, _, arch = name.partition(':')
    if kind in SPANET_KINDS:
        if not arch:
            raise ValueError(f'{kind} needs an arch, e.g. {kind}:s; got {name!r}')
        model = _build_spanet(kind, arch)
    elif name in OTHER_BACKBONES:
        model = _build_mmpretrain(name)
    elif name == 'config':
        if config is None:
            raise ValueError('the contender "config" needs --config PATH')
        model = _build_from_config(config)
    else:
        raise ValueError(f'Unknown contender {name!r}; expected one of '
                         f'{", ".join(k + ":ARCH" for k in SPANET_KINDS)}, '
                         f'{", ".join(OTHER_BACKBONES)}, config')
    model.eval()
    return model


def _build_spanet(kind: str, arch: str) -> nn.Module:
    from spanet_mm import SPAM, SPANet
    if kind == 'reference':
        from spanet_mm.reference import ReferenceSPANet
        return ReferenceSPANet(**SPANet.resolve_arch(arch))
    model = SPANet(arch, with_cp=kind == 'spanet-cp')
    return without_filters(model) if kind == 'spanet-nofilter' else model


def without_filters(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Spectral Pooling Filters are the identity, sharing all its
    parameters and buffers (the same tensors in the same memory, so that only the filters
    differ)."""
    from spanet_mm import SPAM
    shared = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    bare = copy.deepcopy(model, memo=shared)
    for module in bare.modules():
        if isinstance(module, SPAM):
            module.spectral_filter = nn.Identity()
    return bare


def _build_mmpretrain(name: str) -> nn.Module:
    from mmpretrain.models import ConvNeXt, PoolFormer, SwinTransformer
    if name == 'convnext-t':
        return ConvNeXt('tiny', out_indices=(0, 1, 2, 3))
    if name == 'swin-t':
        return SwinTransformer('tiny', out_indices=(0, 1, 2, 3))
    # PoolFormer's out_indices count the stages and the down-samplings between them.
    return PoolFormer('s24', out_indices=(0, 2, 4, 6))


def _build_from_config(path: str) -> nn.Module:
    from importlib import import_module

    from spanet_mm.analysis.common import config_scope, load_config, register_scope
    cfg = load_config(path)
    scope = config_scope(cfg)
    register_scope(scope)
    backbone = dict(cfg.model.backbone)
    backbone.pop('init_cfg', None)  # nothing is read or downloaded
    return import_module(f'{scope}.registry').MODELS.build(backbone)


# -- one call of a contender ----------------------------------------------------------------

def make_step(model: nn.Module, mode: str, x: torch.Tensor,
              amp_dtype: Optional[torch.dtype] = None) -> Callable[[], None]:
    """A function running one forward (``mode='forward'``, no autograd) or one training
    step (``'train'``: forward, mean of each output summed, backward, SGD step), under
    autocast to ``amp_dtype`` if given. On CUDA it waits for the device before returning,
    so that wall-clock times cover the work."""
    device_type = x.device.type

    def finish() -> None:
        if device_type == 'cuda':
            torch.cuda.synchronize()

    def autocast():
        return torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None)

    if mode == 'forward':
        model.eval()

        def forward() -> None:
            with torch.no_grad(), autocast():
                model(x)
            finish()
        return forward
    if mode != 'train':
        raise ValueError(f'mode must be forward or train, got {mode!r}')
    model.train()
    # Plain SGD keeps no state, so the memory figures are the step's own.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            outs = model(x)
            loss = sum(out.float().mean() for out in outs)
        loss.backward()
        optimizer.step()
        finish()
    return train_step


def interleaved_timings(steps: Dict[str, Callable[[], None]], rounds: int,
                        warmup: int) -> Dict[str, List[float]]:
    """Wall-clock seconds of each step, run round by round, in turn."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for round_index in range(rounds):
        # Every other round runs in reverse, so that no contender always follows the same
        # one (which would leave it the same caches and the same thermal state).
        order = list(steps.items())
        for name, step in (order if round_index % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def timing_order(names: Sequence[str]) -> List[str]:
    """``names``, with each ``spanet-nofilter:ARCH`` moved right after ``spanet:ARCH``, so
    that every round times the two back to back and their per-round ratio is paired."""
    order = [name for name in names if not name.startswith('spanet-nofilter:')]
    for name in names:
        if name not in order:
            partner = 'spanet:' + name.partition(':')[2]
            order.insert(order.index(partner) + 1 if partner in order else len(order), name)
    return order


def filter_time_share(model: nn.Module, x: torch.Tensor,
                      rounds: int) -> List[Tuple[float, float]]:
    """Per forward, the share of its wall-clock time spent inside the Spectral Pooling
    Filter modules (timed by hooks around each call, in the same forward, so that load
    changes between rounds cancel out), and the forward's time."""
    from spanet_mm import SpectralPoolingFilter
    spent = [0.0]
    started: List[float] = []

    def before(module, args) -> None:
        started.append(time.perf_counter())

    def after(module, args, output) -> None:
        spent[0] += time.perf_counter() - started.pop()

    filters = [m for m in model.modules() if isinstance(m, SpectralPoolingFilter)]
    handles = [h for m in filters for h in (m.register_forward_pre_hook(before),
                                             m.register_forward_hook(after))]
    shares = []
    try:
        with torch.no_grad():
            model.eval()
            model(x)  # warm-up
            for _ in range(rounds):
                spent[0] = 0.0
                start = time.perf_counter()
                model(x)
                total = time.perf_counter() - start
                shares.append((spent[0] / total, total))
    finally:
        for handle in handles:
            handle.remove()
    return shares


def peak_memory_mb(name: str, mode: str, size: Tuple[int, int], batch: int,
                   config: Optional[str], threads: int) -> float:
    """Peak RSS growth (MB) of one call of ``name`` in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), '--_memory-child', name, '--mode', mode,
           '--sizes', f'{size[0]}x{size[1]}', '--batch-sizes', str(batch),
           '--threads', str(threads)]
    if config:
        cmd += ['--config', config]
    # A fixed mmap threshold makes glibc hand every freed block of 64 KiB or more straight
    # back to the system, so that the resident set follows the tensors alive.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='65536')
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def cuda_peak_memory_mb(step: Callable[[], None], device: torch.device) -> float:
    """Peak CUDA memory allocated during one call, above what was allocated before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _memory_child(args: argparse.Namespace) -> None:
    """Build one contender, run one untimed call, then print the peak RSS growth (MB) of a
    second call over the RSS before it."""
    (height, width), batch = args.sizes[0], args.batch_sizes[0]
    model = build_backbone(args._memory_child, args.config)
    x = torch.randn(batch, 3, height, width)
    step = make_step(model, args.mode[0], x)
    step()  # first-call allocations (oneDNN primitives, operator caches) are not the step's
    for param in model.parameters():
        param.grad = None  # the gradients count as the step's memory
    before = _reset_peak_rss()
    step()
    print(_peak_rss_kib() / 1024 - before / 1024)


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


# -- command line ---------------------------------------------------------------------------

def parse_size(text: str) -> Tuple[int, int]:
    """``'512'`` -> (512, 512); ``'800x1216'`` -> (800, 1216)."""
    parts = text.lower().split('x')
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
        raise argparse.ArgumentTypeError(f'expected a size like 512 or 800x1216, got {text!r}')
    return (sizes[0], sizes[-1])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help='contenders (see above); default: %(default)s')
    parser.add_argument('--config', help='config whose model.backbone is the contender '
                        '"config" (added to --models if not listed)')
    parser.add_argument('--sizes', nargs='+', type=parse_size, default=[(224, 224)],
                        help='input sizes, e.g. 224 512 800x1216 (default 224)')
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1])
    parser.add_argument('--mode', nargs='+', choices=['forward', 'train'],
                        default=['forward'], help='forward (no autograd) and/or train step')
    parser.add_argument('--rounds', type=int, default=10, help='timed rounds (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds (default 2)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch.set_num_threads (default 2)')
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda[:N]')
    parser.add_argument('--amp', action='store_true',
                        help='autocast: float16 on CUDA, bfloat16 on CPU')
    parser.add_argument('--memory', action='store_true',
                        help='also measure peak memory, each case in a fresh process')
    parser.add_argument('--json', help='write all results (and each round\'s time) here')
    parser.add_argument('--_memory-child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.config and 'config' not in args.models:
        args.models.append('config')
    if args.rounds < 1 or args.warmup < 0:
        parser.error('--rounds must be >= 1 and --warmup >= 0')
    return args


def run(args: argparse.Namespace) -> List[Result]:
    """Time every contender in every mode, size and batch size."""
    device = torch.device(args.device)
    amp_dtype = None
    if args.amp:
        amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    models = {}
    for name in timing_order(args.models):  # each spanet:ARCH before its filter-less self
        partner = 'spanet:' + name.partition(':')[2]
        if name.startswith('spanet-nofilter:') and partner in models:
            # "Without the filter" means the very same model (weights and all) without it.
            models[name] = without_filters(models[partner])
        else:
            models[name] = build_backbone(name, args.config).to(device)
    results = []
    for mode in args.mode:
        for height, width in args.sizes:
            for batch in args.batch_sizes:
                x = torch.randn(batch, 3, height, width, device=device)
                steps = {name: make_step(models[name], mode, x, amp_dtype)
                         for name in timing_order(args.models)}
                times = interleaved_timings(steps, args.rounds, args.warmup)
                for name in args.models:
                    result = Result(name, mode, height, width, batch, times[name])
                    # Host-side hooks cannot time asynchronous CUDA work.
                    if mode == 'forward' and name.startswith('spanet:') and \
                            device.type == 'cpu':
                        result.filter_share = filter_time_share(models[name], x, args.rounds)
                    if args.memory and device.type == 'cuda':
                        result.peak_mb = cuda_peak_memory_mb(steps[name], device)
                    elif args.memory:
                        result.peak_mb = peak_memory_mb(name, mode, (height, width), batch,
                                                        args.config, args.threads)
                    results.append(result)
                    print(f'  done: {name} {mode} {height}x{width} batch {batch}: '
                          f'{result.median_ms:.1f} ms', file=sys.stderr)
    return results


def format_table(results: List[Result]) -> str:
    """The results as a text table, with the speed-up over the reference of the same arch
    and the spectral filter's share where the filter-less model was timed too."""
    by_key = {(r.model, r.mode, r.height, r.width, r.batch): r for r in results}
    head = (f'{"model":<20} {"mode":<8} {"size":>9} {"batch":>5} {"median ms":>10} '
            f'{"IQR ms":>15} {"min-max ms":>17} {"img/s":>7} {"vs ref":>6} {"peak MB":>8}')
    lines = [head, '-' * len(head)]
    notes = []
    for r in results:
        kind, _, arch = r.model.partition(':')
        key = (r.mode, r.height, r.width, r.batch)
        ref = by_key.get((f'reference:{arch or "s"}', ) + key)
        speedup = f'{ref.median_ms / r.median_ms:.2f}x' if ref else ''
        peak = f'{r.peak_mb:.0f}' if r.peak_mb is not None else ''
        iqr = f'{r.quantile(.25) * 1e3:.1f}-{r.quantile(.75) * 1e3:.1f}'
        lines.append(
            f'{r.model:<20} {r.mode:<8} {f"{r.height}x{r.width}":>9} {r.batch:>5} '
            f'{r.median_ms:>10.1f} {iqr:>15} '
            f'{f"{min(r.times) * 1e3:.1f}-{max(r.times) * 1e3:.1f}":>17} '
            f'{r.batch * 1000 / r.median_ms:>7.1f} {speedup:>6} {peak:>8}')
        if r.filter_share:
            shares = sorted(share for share, _ in r.filter_share)
            fastest = min(r.filter_share, key=lambda item: item[1])
            notes.append(f'spectral filter time inside the forward of {r.model} '
                         f'{r.height}x{r.width} batch {r.batch} (hooks): median '
                         f'{100 * statistics.median(shares):.1f}%, range '
                         f'{100 * shares[0]:.1f}-{100 * shares[-1]:.1f}%, in the fastest '
                         f'(least disturbed) forward {100 * fastest[0]:.1f}% of '
                         f'{1000 * fastest[1]:.1f} ms')
        bare = by_key.get((f'spanet-nofilter:{arch}', ) + key)
        if kind == 'spanet' and bare:
            share = 1 - bare.median_ms / r.median_ms
            # Each round timed the two back to back: the median of the per-round shares is
            # the least affected by load that changes between rounds.
            paired = statistics.median(1 - b / a for a, b in zip(r.times, bare.times))
            notes.append(f'spectral filter share of {r.model} {r.mode} {r.height}x{r.width} '
                         f'batch {r.batch} (with vs without): {100 * paired:.1f}% (median '
                         f'of per-round pairs); {100 * share:.1f}% (ratio of medians); '
                         f'{100 * (1 - min(bare.times) / min(r.times)):.1f}% (ratio of '
                         f'minima)')
        cp = by_key.get((f'spanet-cp:{arch}', ) + key)
        if kind == 'spanet' and cp and cp.peak_mb and r.peak_mb:
            notes.append(f'with_cp peak memory of {r.model} {r.mode} {r.height}x{r.width} '
                         f'batch {r.batch}: {100 * cp.peak_mb / r.peak_mb:.0f}% of without')
    return '\n'.join(lines + [''] + notes)


def environment() -> dict:
    return dict(torch=torch.__version__, threads=torch.get_num_threads(),
                python=platform.python_version(), machine=platform.processor() or
                platform.machine(), cpus=os.cpu_count(), loadavg=os.getloadavg(),
                command=' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:]))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._memory_child:
        _memory_child(args)
        return
    env = environment()
    print(f'torch {env["torch"]}, {env["threads"]} threads, {env["cpus"]} CPUs, load '
          f'average {env["loadavg"][0]:.2f} at start', file=sys.stderr)
    results = run(args)
    env['loadavg_end'] = os.getloadavg()
    print(format_table(results))
    print(f'load average (1 min) at start {env["loadavg"][0]:.2f}, at end '
          f'{env["loadavg_end"][0]:.2f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(environment=env, results=[r.summary() for r in results]), f,
                      indent=1)


if __name__ == '__main__':
    main()
