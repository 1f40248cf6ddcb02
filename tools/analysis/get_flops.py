#!/usr/bin/env python
"""Parameters and FLOPs (fvcore MACs) of a model, with the spectral parts on their own lines.

Examples::

    # any MMPretrain / MMDetection / MMSegmentation config (default_scope picks the codebase)
    python tools/analysis/get_flops.py configs/mmdet/retinanet_spanet_s_1x.py
    python tools/analysis/get_flops.py configs/mmseg/fpn_spanet_s_ade20k_80k.py --shape 512 512
    # an ImageNet classifier by catalogue name (SPANet's Table 2, SPANetV2's table)
    python tools/analysis/get_flops.py --model spanet:s
    python tools/analysis/get_flops.py --model spanetv2:s18_pure
    # a bare backbone (all four outputs), any catalogued one
    python tools/analysis/get_flops.py --model spanet:m --backbone-only --shape 512 512

How things are counted is explained in spanet_tools/analysis/flops.py and printed with the
result.
"""

import argparse
import json
import os.path as osp
import sys
import warnings
from typing import List, Optional

# Let `python tools/analysis/get_flops.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402

from spanet_tools.analysis.flops import format_measurement, measure, measurement_json  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Parameters and FLOPs (MACs, as fvcore counts them) of a config or a '
        "catalogued model; the spectral filters' FFTs are counted separately."
    )
    parser.add_argument('config', nargs='?', help='config file of any of the three codebases')
    parser.add_argument(
        '--model',
        metavar='FAMILY:ARCH',
        help='instead of a config: the ImageNet classifier of spanet:ARCH or '
        'spanetv2:ARCH (e.g. spanet:s, spanetv2:s18_pure)',
    )
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='with --model: count the bare backbone (all four outputs); any '
        'catalogued backbone (convnext:tiny, reference:s, ...)',
    )
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        metavar='SIZE',
        help='input height and width (one value: square); default 224 224 '
        'for classifiers, 800 1280 for detectors, 512 512 for segmentors',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        metavar='KEY=VALUE',
        help='override config settings, e.g. model.backbone.arch=m',
    )
    parser.add_argument(
        '--depth',
        type=int,
        default=0,
        help="also print fvcore's per-module table down to this depth "
        '(its numbers include the spectral parts as implemented)',
    )
    parser.add_argument('--json', help='also write the numbers to this JSON file')
    # Renamed: the catalogue's names (spanet:s, spanetv2:s18_pure, ...) replace arch names.
    parser.add_argument('--arch', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arch is not None:
        parser.error(f'--arch is now --model FAMILY:ARCH, e.g. --model spanet:{args.arch}')
    if (args.config is None) == (args.model is None):
        parser.error('give either a CONFIG or --model, not both and not neither')
    if args.backbone_only and args.model is None:
        parser.error('--backbone-only goes with --model')
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error(f'--shape takes 1 or 2 values, got {len(args.shape)}')
    if args.config is not None and not osp.isfile(args.config):
        parser.error(f'no config file at {args.config!r}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    # MMEngine imports pkg_resources to find the codebases' shipped configs; its
    # deprecation notice is noise here.
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    measured = measure(args.config, args.model, args.backbone_only, args.shape, args.cfg_options)
    print(format_measurement(measured))
    if args.depth > 0:
        from mmengine.analysis.print_helper import complexity_stats_table

        print(
            complexity_stats_table(
                measured.result.analyzer, max_depth=args.depth, show_param_shapes=False
            )
        )
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(measurement_json(measured), f, indent=2)


if __name__ == '__main__':
    main()
