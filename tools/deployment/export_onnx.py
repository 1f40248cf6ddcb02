#!/usr/bin/env python
"""Export a SPANet or SPANetV2 backbone, classifier, detector or segmentor to ONNX, with
dynamic batch, height and width, and check it in ONNX Runtime and OpenVINO.

Examples::

    # the bare backbone (four normed stage features), either generation
    python tools/deployment/export_onnx.py backbone --model spanet:s --out spanet_s.onnx --verify
    python tools/deployment/export_onnx.py backbone --model spanetv2:s18_hybrid \\
        --checkpoint spanetv2_s18_hybrid.pth --out spanetv2_s18_hybrid.onnx --verify
    # an ImageNet classifier (the logits); a release file brings its head
    python tools/deployment/export_onnx.py classifier --model spanetv2:s18_pure \\
        --out spanetv2_s18_pure_cls.onnx --verify
    # a RetinaNet (MMDetection's retinanet_r50_fpn_1x_coco with the backbone), or a config
    python tools/deployment/export_onnx.py retinanet --model spanetv2:s18_pure \\
        --shape 512 512 --out retinanet.onnx --verify
    # a segmentor config (Semantic FPN, UperNet): the decode head's logits
    python tools/deployment/export_onnx.py segmentor \\
        --config configs/mmseg/upernet_spanetv2_s18_pure_ade20k_160k.py \\
        --checkpoint work_dirs/upernet/iter_160000.pth --shape 512 512 --out upernet.onnx --verify
    # a two-stage detector (Mask R-CNN, Cascade): its backbone and neck
    python tools/deployment/export_onnx.py backbone-neck \\
        --config configs/mmdet/mask_rcnn_spanetv2_s18_pure_3x.py --shape 800 1216 \\
        --out mask_rcnn_features.onnx --verify

The tool prints the op types of the graph and checks that it holds no DFT or STFT op and no
complex tensor. --verify runs the file in each of --runtimes (CPU, float32) at --verify-shapes
(by default three odd, non-square sizes other than --shape) and compares with PyTorch. The
exit status is 1 if a check fails. What is exported and how: docs/deployment.md and
spanet_mm/deployment/onnx.py.
"""

import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import DictAction

# Let `python tools/deployment/export_onnx.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from spanet_mm.checkpoint import CheckpointError  # noqa: E402
from spanet_mm.deployment.onnx import (  # noqa: E402
    DEFAULT_OPSET,
    EXPORTERS,
    KINDS,
    MIN_OPSET,
    RUNTIMES,
    export_and_verify,
)
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
        help='without --config: spanet:ARCH or spanetv2:ARCH (default spanet:s)',
    )
    parser.add_argument(
        '--config',
        help='a config file: its model (for backbone, its model.backbone) is exported; '
        'segmentor and backbone-neck need one',
    )
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='overrides of the config'
    )
    parser.add_argument(
        '--checkpoint',
        help="weights: a backbone's state_dict, a whole model's MMEngine checkpoint, or the "
        "authors' release file",
    )
    parser.add_argument(
        '--num-classes', type=int, default=1000, help='classifier without --config: classes'
    )
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=(224, 224),
        metavar=('H', 'W'),
        help='input size of the example the graph is recorded with (default 224 224)',
    )
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument(
        '--exporter',
        choices=EXPORTERS,
        default='dynamo',
        help="torch.onnx's exporter: dynamo (default) or the deprecated but much faster "
        'torchscript',
    )
    parser.add_argument('--verify', action='store_true', help='compare the runtimes with PyTorch')
    parser.add_argument(
        '--verify-shapes',
        nargs='+',
        type=size_arg,
        default=None,
        metavar='HxW',
        help='sizes to check (default: three odd, non-square sizes other than --shape)',
    )
    parser.add_argument(
        '--runtimes', nargs='+', choices=RUNTIMES, default=list(RUNTIMES), help='for --verify'
    )
    parser.add_argument('--atol', type=float, default=1e-4)
    # Renamed: the catalogue's names (spanet:s, spanetv2:s18_pure, ...) replace arch names.
    parser.add_argument('--arch', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arch is not None:
        parser.error(f'--arch is now --model FAMILY:ARCH, e.g. --model spanet:{args.arch}')
    if args.opset < MIN_OPSET:
        parser.error(
            f'--opset {args.opset}: the exporters write opset {MIN_OPSET} or later now '
            f'(--opset {DEFAULT_OPSET}, the default)'
        )
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
            cfg_options=args.cfg_options,
            runtimes=args.runtimes,
            exporter=args.exporter,
        )
    except (CheckpointError, ValueError) as error:
        sys.exit(f'export_onnx.py: {error}')
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())
