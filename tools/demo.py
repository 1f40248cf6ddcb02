#!/usr/bin/env python
"""Train a RetinaNet with a small SPANet from scratch on generated shapes, on the CPU.

    python tools/demo.py [--work-dir work_dirs/demo] [--iters N] [--seed S] [--quick]
    python tools/demo.py --backbone-only [--model spanet:s] [--image PATH] [--checkpoint PATH]

The main job: writes a COCO-format dataset of circles, squares and triangles (400 training
and 50 held-out 128x128 images, categories named circle, square, triangle) under
WORK_DIR/data, trains configs/demo/retinanet_spanet_shapes.py with MMEngine's Runner
(progress is logged every 10 iterations), evaluates COCO bbox mAP on the held-out images and
saves under WORK_DIR the checkpoint, ground truth | prediction pictures of the first four
held-out images drawn 4x larger (WORK_DIR/predictions/*.png) and WORK_DIR/summary.png (the
training loss curve with the held-out mAP), then prints their paths and the mAP. Nothing is
downloaded.

--backbone-only instead runs the SPANet backbone on one photograph and prints, per stage,
the feature shape and how much of the query's energy the Spectral Pooling Filter keeps in the
low frequencies. The logic lives in spanet_tools/demo.py.
"""

import argparse
import os.path as osp
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Let `python tools/demo.py` work from a checkout that is not pip-installed.
sys.path.insert(0, REPO)

from spanet_tools.demo import DemoSettings, backbone_demo, train_detector  # noqa: E402

DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'retinanet_spanet_shapes.py')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--work-dir', default='work_dirs/demo', help='where data, logs, checkpoint and pictures go'
    )
    parser.add_argument('--config', default=DEMO_CONFIG, help='the detector config')
    parser.add_argument('--iters', type=int, help='training iterations (default: config)')
    parser.add_argument('--seed', type=int, default=0, help='seed of data and training')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='held-out images')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='a smoke run: 64 training, 16 held-out images, 20 iterations, '
        'boxes of any score kept so that the barely trained model is scored',
    )
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='only run the backbone on a photograph (the options below)',
    )
    parser.add_argument(
        '--model',
        default='spanet:s',
        help='backbone-only: the SPANet, spanet:ARCH (default spanet:s)',
    )
    parser.add_argument('--image', help='backbone-only: an image (default: scikit-image photo)')
    parser.add_argument('--checkpoint', help="backbone-only: the authors' ImageNet weights")
    # Renamed: the catalogue's names (spanet:s, spanetv2:s18_pure, ...) replace arch names.
    parser.add_argument('--arch', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arch is not None:
        parser.error(f'--arch is now --model FAMILY:ARCH, e.g. --model spanet:{args.arch}')
    if args.quick:
        args.num_train, args.num_val = 64, 16
        args.iters = args.iters or 20
    for name in ('iters', 'num_train', 'num_val'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive, got {value}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.backbone_only:
        backbone_demo(args.model, args.image, args.checkpoint)
    else:
        train_detector(
            DemoSettings(
                args.config,
                args.work_dir,
                args.iters,
                args.seed,
                args.num_train,
                args.num_val,
                keep_all_scores=args.quick,
            )
        )


if __name__ == '__main__':
    main()
