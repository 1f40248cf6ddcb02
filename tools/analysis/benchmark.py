#!/usr/bin/env python
"""Speed (and memory) of backbones in one process, interleaved, with a GEMM calibration.

Examples::

    # forward, batch 1: SPANet-S against its reference, its filter-less self and ConvNeXt-T
    python tools/analysis/benchmark.py --sizes 224 512
    # the same under bfloat16 autocast
    python tools/analysis/benchmark.py --sizes 224 512 --amp
    # ... with one autocast region around all the timed calls, as a loop inside one
    # `with torch.autocast(...)` runs (autocast converts nn.Linear weights once per region)
    python tools/analysis/benchmark.py --models spanet:s convnext:tiny --amp \\
        --autocast-region run
    # SPANetV2 against the straightforward V2 reference
    python tools/analysis/benchmark.py --models spanetv2:s18_pure reference-v2:s18_pure \\
        spanetv2:s18_hybrid reference-v2:s18_hybrid --sizes 224 512
    # a training step (forward, backward, SGD step) at 512x512, batch 2, with peak memory
    python tools/analysis/benchmark.py --mode train --sizes 512 --batch-sizes 2 \\
        --models spanet:s spanet-cp:s reference:s --memory
    # how much of the bfloat16 forward is converting weights: each model again with its
    # weights stored in bfloat16 (nothing converted per call)
    python tools/analysis/benchmark.py --models spanet:s convnext:tiny spanet:s@amp-weights \\
        convnext:tiny@amp-weights --amp
    # on a GPU, how much of the forward is launching kernels: each model again replayed from
    # a CUDA graph
    python tools/analysis/benchmark.py --device cuda --amp --sizes 224 --batch-sizes 32 \\
        --models spanet:s convnext:tiny spanet:s@cuda-graph convnext:tiny@cuda-graph
    # the opt-in inference path: each model again compiled with frozen weights
    # (torch.compile; SPANet-S compiles in about 30-45 s per size on 2 vCPUs)
    python tools/analysis/benchmark.py --models spanet:s convnext:tiny spanet:s@compiled \\
        convnext:tiny@compiled --amp --sizes 224 512
    # the backbone of a config, at a detection size
    python tools/analysis/benchmark.py --config configs/mmdet/retinanet_spanet_s_1x.py \\
        --models config reference:s --sizes 800x1216

Method, calibration and the columns: see spanet_tools/analysis/benchmark.py.
"""

import argparse
import json
import os.path as osp
import sys
from typing import List, Optional

# Let `python tools/analysis/benchmark.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from spanet_mm.engine.cli import size_arg  # noqa: E402
from spanet_tools.analysis.benchmark import (  # noqa: E402
    AUTOCAST_REGIONS,
    DEFAULT_MODELS,
    add_timing_arguments,
    check_settings,
    check_timing_arguments,
    format_report,
    run_benchmark,
)
from spanet_tools.catalogue import describe  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--models',
        nargs='+',
        default=list(DEFAULT_MODELS),
        metavar='NAME',
        help='contenders, FAMILY:ARCH or "config" (default: %(default)s), '
        'each optionally with a variant suffix, forward only: @amp-weights '
        '(weights stored in the autocast dtype; --amp), @cuda-graph (the '
        'forward replayed from a CUDA graph; --device cuda) or @compiled '
        '(torch.compile with frozen weights, compiled before the timing); '
        f'known: {describe()}',
    )
    parser.add_argument(
        '--config',
        help='config whose model.backbone is the contender '
        '"config" (added to --models if not listed)',
    )
    parser.add_argument(
        '--sizes',
        nargs='+',
        type=size_arg,
        default=[(224, 224)],
        help='input sizes, e.g. 224 512 800x1216 (default 224)',
    )
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1])
    parser.add_argument(
        '--mode',
        nargs='+',
        choices=['forward', 'train'],
        default=['forward'],
        help='forward (no autograd) and/or train step',
    )
    add_timing_arguments(parser)
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda[:N]')
    parser.add_argument(
        '--amp', action='store_true', help='autocast: bfloat16 on CPU, float16 on CUDA'
    )
    parser.add_argument(
        '--autocast-region',
        choices=AUTOCAST_REGIONS,
        default='call',
        help='with --amp, where the autocast region opens: around each call '
        "(default, as MMEngine's loops do) or once around all the timed calls "
        'of a setting (forward only, as a loop inside one `with '
        'torch.autocast(...)` runs; autocast then converts the weights of '
        'nn.Linear and nn.Conv2d once per region, not per call)',
    )
    parser.add_argument(
        '--memory',
        action='store_true',
        help='also measure peak memory: on CPU each case in a fresh process '
        "(peak RSS growth), on CUDA the allocator's peak during one call",
    )
    parser.add_argument(
        '--allocator-as-found',
        action='store_true',
        help="leave glibc's allocator as the process has it instead of fixing "
        'its mmap threshold (then page faults per call vary between runs)',
    )
    args = parser.parse_args(argv)
    if args.config and 'config' not in args.models:
        args.models.append('config')
    check_timing_arguments(parser, args)
    try:  # the library's own rules, refused here as usage errors
        check_settings(args.models, args.device, args.amp, args.mode, args.autocast_region)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    report = run_benchmark(
        args.models,
        args.device,
        args.config,
        sizes=args.sizes,
        batch_sizes=args.batch_sizes,
        modes=args.mode,
        rounds=args.rounds,
        warmup=args.warmup,
        amp=args.amp,
        autocast_region=args.autocast_region,
        memory=args.memory,
        threads=args.threads,
        calibration_size=args.calibration_size,
        steady=not args.allocator_as_found,
    )
    print(format_report(report))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report.to_json(), f, indent=1)


if __name__ == '__main__':
    main()
