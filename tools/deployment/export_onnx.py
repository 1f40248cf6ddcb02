#!/usr/bin/env python
"""Export a backbone, a RetinaNet or an ImageNet classifier to ONNX, with dynamic batch,
height and width, and check it with onnxruntime.

Examples::

    # the bare backbone (four normed stage features)
    python tools/deployment/export_onnx.py backbone --model spanet:s --out spanet_s.onnx --verify
    python tools/deployment/export_onnx.py backbone --model spanetv2:s18_hybrid \\
        --out spanetv2_s18_hybrid.onnx --verify
    # a whole RetinaNet: MMDetection's retinanet_r50_fpn_1x_coco with a SPANet backbone
    python tools/deployment/export_onnx.py retinanet --model spanet:s \\
        --out retinanet_spanet_s.onnx --shape 512 512 --verify
    # or any detector / classifier config (the model is exported without post-processing)
    python tools/deployment/export_onnx.py retinanet \\
        --config configs/mmdet/retinanet_spanet_s_1x.py \\
        --checkpoint work_dirs/retinanet/epoch_12.pth --out retinanet.onnx --verify
    python tools/deployment/export_onnx.py classifier --model spanet:s --out spanet_s_cls.onnx \\
        --verify

What is exported and how: see spanet_mm/deployment/onnx.py. --verify runs the file with
onnxruntime (CPU) at --verify-shapes (by default two sizes other than the export size) and
compares with PyTorch; the tool exits with status 1 if any output differs by more than --atol.
"""

import argparse
import os.path as osp
import sys
from typing import List, Optional

# Let `python tools/deployment/export_onnx.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from spanet_mm.deployment.onnx import KINDS, export_and_verify  # noqa: E402
from spanet_mm.engine.cli import size_arg  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('kind', choices=KINDS)
    parser.add_argument(
        '--model',
        default='spanet:s',
        metavar='FAMILY:ARCH',
        help='without --config: the catalogued model (default spanet:s; '
        'retinanet and classifier take spanet:ARCH or spanetv2:ARCH)',
    )
    parser.add_argument(
        '--config',
        help='a config file: its model (or, for backbone, its model.backbone) is exported',
    )
    parser.add_argument(
        '--checkpoint', help='weights to load (an MMEngine checkpoint of the whole model)'
    )
    parser.add_argument(
        '--num-classes',
        type=int,
        default=1000,
        help='classifier without --config: number of classes',
    )
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=(224, 224),
        metavar=('H', 'W'),
        help='input size used for tracing',
    )
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument(
        '--verify', action='store_true', help='compare onnxruntime with PyTorch at --verify-shapes'
    )
    parser.add_argument(
        '--verify-shapes',
        nargs='+',
        type=size_arg,
        default=None,
        metavar='HxW',
        help='sizes to check (default: two sizes other than --shape)',
    )
    parser.add_argument('--atol', type=float, default=1e-4)
    # Renamed: the catalogue's names (spanet:s, spanetv2:s18_pure, ...) replace arch names.
    parser.add_argument('--arch', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arch is not None:
        parser.error(f'--arch is now --model FAMILY:ARCH, e.g. --model spanet:{args.arch}')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        passed = export_and_verify(
            args.kind,
            args.out,
            args.model,
            args.config,
            args.checkpoint,
            args.num_classes,
            args.shape,
            args.opset,
            args.verify,
            args.verify_shapes,
            args.atol,
        )
    except NotImplementedError as error:  # a model the exporter cannot take (SPANetV2)
        sys.exit(f'export_onnx.py: {error}')
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())
