#!/usr/bin/env python
"""CPU inference of exported backbones: PyTorch eager, ONNX Runtime and OpenVINO, interleaved
in one process, with a GEMM calibration.

Examples::

    # SPANet-S, SPANetV2-S18 pure and hybrid and ConvNeXt-T, batch 1 at 224 and 512, 2 threads
    python tools/analysis/runtime_benchmark.py --sizes 224 512
    # quicker exports (TorchScript-based exporter), files cached in another work dir
    python tools/analysis/runtime_benchmark.py --exporter torchscript --work-dir /tmp/onnx
    # ... and in bfloat16 where the CPU has bfloat16 units (PyTorch autocast, OpenVINO)
    python tools/analysis/runtime_benchmark.py --sizes 224 512 --bfloat16
    # ExSPAM's filter: real products against torch.fft at SPANetV2's stage sizes
    python tools/analysis/runtime_benchmark.py --filter-costs

Exported files are cached in --work-dir (the models are built with a fixed seed, so a cached
file holds the same weights). Method, calibration and the columns: see
spanet_tools/analysis/runtimes.py.
"""

import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional

# PyTorch's OpenMP threads must sleep, not spin, between its calls, or they take the cores
# from the runtimes timed in turn with it; read when torch starts, so set before importing it.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# Let `python tools/analysis/runtime_benchmark.py` work from a checkout that is not installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from spanet_mm.deployment.onnx import EXPORTERS  # noqa: E402
from spanet_mm.engine.cli import size_arg  # noqa: E402
from spanet_tools.analysis.benchmark import (  # noqa: E402
    add_timing_arguments,
    check_timing_arguments,
)
from spanet_tools.analysis.runtimes import (  # noqa: E402
    BASELINE,
    DEFAULT_MODELS,
    DEFAULT_RUNTIMES,
    RUNTIMES,
    check_runtimes,
    filter_feature_sizes,
    format_filter_costs,
    format_report,
    run_runtime_benchmark,
    time_filter_costs,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--models',
        nargs='+',
        default=list(DEFAULT_MODELS),
        metavar='FAMILY:ARCH',
        help='catalogued backbones (default: %(default)s)',
    )
    parser.add_argument(
        '--runtimes',
        nargs='+',
        choices=RUNTIMES,
        default=list(DEFAULT_RUNTIMES),
        help='pytorch (eager, required: the reference), onnxruntime, openvino (reshaped to '
        'each timed size), openvino-dynamic (the file as exported), pytorch-bf16, '
        'openvino-bf16; default: %(default)s',
    )
    parser.add_argument(
        '--sizes',
        nargs='+',
        type=size_arg,
        default=[(224, 224), (512, 512)],
        help='input sizes, e.g. 224 512 800x1216 (default 224 512)',
    )
    parser.add_argument('--batch', type=int, default=1)
    add_timing_arguments(parser, threads_help='threads of every runtime (default 2)')
    parser.add_argument(
        '--exporter',
        choices=EXPORTERS,
        default='dynamo',
        help='ONNX exporter (default dynamo; torchscript exports in seconds, not minutes)',
    )
    parser.add_argument(
        '--work-dir',
        default='work_dirs/runtime_benchmark',
        help='where exported files are cached (default %(default)s)',
    )
    parser.add_argument(
        '--baseline',
        default=BASELINE,
        help='the contender the others are compared with in each runtime (default %(default)s)',
    )
    parser.add_argument(
        '--bfloat16',
        action='store_true',
        help='also pytorch-bf16 (autocast) and openvino-bf16 where this CPU has bfloat16 '
        'units (the report says which runtimes do)',
    )
    parser.add_argument(
        '--filter-costs',
        action='store_true',
        help="instead: time ExSPAM's filter as the FFT and as real products at SPANetV2's "
        'stage sizes of 224, 512 and 800x1216 inputs',
    )
    args = parser.parse_args(argv)
    check_timing_arguments(parser, args)
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    try:
        check_runtimes(args.runtimes)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.filter_costs:
        costs = time_filter_costs(
            filter_feature_sizes(),
            threads=args.threads,
            rounds=args.rounds,
            warmup=args.warmup,
            work_dir=args.work_dir,
        )
        print(format_filter_costs(costs))
        if args.json:
            with open(args.json, 'w') as f:
                json.dump([vars(c) for c in costs], f, indent=1)
        return
    report = run_runtime_benchmark(
        args.models,
        args.sizes,
        args.runtimes,
        work_dir=args.work_dir,
        exporter=args.exporter,
        threads=args.threads,
        rounds=args.rounds,
        warmup=args.warmup,
        batch=args.batch,
        calibration_size=args.calibration_size,
        baseline=args.baseline,
        bfloat16=args.bfloat16,
    )
    print(format_report(report))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report.to_json(), f, indent=1)


if __name__ == '__main__':
    main()
