#!/usr/bin/env python
"""Context maps of a spectral token mixer overlaid on photographs: SPANet's SPAM (the paper's
Figure 4 and Figure S1) or SPANetV2's ExSPAM (one panel per head).

Examples::

    # the last SPAM layer of SPANet-S (as in Figure S1), the photographs scikit-image ships
    python tools/analysis/context_map.py --checkpoint spanet_small.pth --out work_dirs/ctx/spam.png
    python tools/analysis/context_map.py --images my_photos/ --stage 2 --block 5 --reduce mean
    # an ExSPAM layer of SPANetV2 (hybrids have ExSPAM in stages 0 and 1 only)
    python tools/analysis/context_map.py --model spanetv2:s18_hybrid --stage 1

SPAM, one row per image: the input, one panel per balance λ (that Spectral Pooling Gate's
output) and the aggregated context (their sum). ExSPAM: the input, each head's filtered
context (its depth-wise conv and learned spectral gain) and the mixed context. Each map is
reduced over channels (--reduce: norm, the root mean square, by default; mean; absmean),
upsampled to the image's size, scaled to [0, 1] per panel and overlaid on the image. Without
--checkpoint the weights are random (a sanity check of the tool, not of the model).
"""

import argparse
import os.path as osp
import sys
from typing import List, Optional

# Let `python tools/analysis/context_map.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from spanet_tools.analysis.context import REDUCTIONS, context_map_figure  # noqa: E402
from spanet_tools.catalogue import build_backbone  # noqa: E402
from spanet_tools.images import image_paths, read_rgb  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Context maps of a SPAM (SPANet) or ExSPAM (SPANetV2) layer overlaid on images.'
    )
    parser.add_argument(
        '--model',
        default='spanet:s',
        metavar='FAMILY:ARCH',
        help='spanet:ARCH (s, m, mx, b, bx) or spanetv2:ARCH (s18_pure, ...); default spanet:s',
    )
    parser.add_argument('--checkpoint', help='weights (release or spanet_mm layout)')
    parser.add_argument(
        '--images',
        help='folder of photographs (or one image); default: '
        'the colour photographs scikit-image ships',
    )
    parser.add_argument('--stage', type=int, default=-1, help='stage index (default: last)')
    parser.add_argument(
        '--block', type=int, default=-1, help='block index within the stage (default: last)'
    )
    parser.add_argument(
        '--reduce',
        default='norm',
        choices=sorted(REDUCTIONS),
        help='channel reduction of each map (default: norm, the RMS)',
    )
    parser.add_argument(
        '--size',
        type=int,
        default=224,
        help='the shorter image side the model sees (aspect ratio kept)',
    )
    parser.add_argument('--alpha', type=float, default=0.5, help='opacity of the overlay')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the random initialisation (without --checkpoint)',
    )
    parser.add_argument('--out', default='work_dirs/context_map/context_map.png', help='output PNG')
    # Renamed: the catalogue's names (spanet:s, spanetv2:s18_pure, ...) replace arch names.
    parser.add_argument('--arch', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arch is not None:
        parser.error(f'--arch is now --model FAMILY:ARCH, e.g. --model spanet:{args.arch}')
    if not args.model.startswith(('spanet:', 'spanetv2:')):
        parser.error(f'--model must be spanet:ARCH or spanetv2:ARCH, got {args.model!r}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model = build_backbone(args.model, checkpoint=args.checkpoint)
    images = [read_rgb(p) for p in image_paths(args.images)]
    label = f'{args.model} ({args.checkpoint or "random weights"})'
    try:
        context_map_figure(
            model,
            images,
            args.out,
            args.size,
            args.stage,
            args.block,
            args.reduce,
            args.alpha,
            label,
        )
    except (TypeError, IndexError) as error:  # a layer without a spectral mixer, or none
        sys.exit(f'context_map.py: {error}')
    print(f'{len(images)} images -> {args.out}')


if __name__ == '__main__':
    main()
