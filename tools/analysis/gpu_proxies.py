#!/usr/bin/env python
"""What backbones cost on a GPU, counted on the CPU: operations per forward and per training
step on the GPU's code path, graph breaks under torch.compile, inductor's kernels.

Examples::

    # SPANet-S, SPANetV2-S18 pure and hybrid against ConvNeXt-T at 224, batch 2
    python tools/analysis/gpu_proxies.py
    # ... also compiled for the CPU, counting inductor's kernels (minutes per model)
    python tools/analysis/gpu_proxies.py --inductor
    # other contenders and sizes, with the counts in a json file
    python tools/analysis/gpu_proxies.py --models spanet:s reference:s --size 800x1216 \\
        --json proxies.json

What is counted and how: see spanet_tools/analysis/gpu_proxies.py.
"""

import argparse
import json
import os.path as osp
import sys
from typing import List, Optional

# Let `python tools/analysis/gpu_proxies.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from spanet_mm.engine.cli import size_arg  # noqa: E402
from spanet_tools.analysis import gpu_proxies  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--models',
        nargs='+',
        default=list(gpu_proxies.PROXY_MODELS),
        help='catalogued backbones, FAMILY:ARCH (default: %(default)s)',
    )
    parser.add_argument('--size', type=size_arg, default=(224, 224), help='e.g. 224 or 800x1216')
    parser.add_argument('--batch', type=int, default=2, help='images per input (default 2)')
    parser.add_argument(
        '--baseline',
        default=gpu_proxies.BASELINE,
        help='the contender the ratios are taken against (default %(default)s)',
    )
    parser.add_argument(
        '--inductor',
        action='store_true',
        help="also compile for the CPU and count inductor's kernels (slow)",
    )
    parser.add_argument('--json', help='write the counts here')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    results = gpu_proxies.measure_all(
        args.models, args.size, args.batch, args.inductor, log=lambda line: print(line, flush=True)
    )
    print(gpu_proxies.format_table(results, args.baseline))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([r.to_json() for r in results], f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
