#!/usr/bin/env python
"""Fourier spectra of token-mixer outputs: the SPANet paper's Figures 1 and 2, for any
catalogued backbone.

Examples::

    # random weights (a sanity check), the photographs scikit-image ships
    python tools/analysis/spectrum.py --out-dir work_dirs/spectrum
    # trained weights and your own photographs; SPANetV2 draws its ExSPAM (and, in hybrids,
    # attention) layers
    python tools/analysis/spectrum.py --images my_photos/ \\
        --models spanet:s spanetv2:s18_hybrid convnext:tiny \\
        --checkpoint spanet:s=spanet_small.pth convnext:tiny=convnext-tiny.pth

Writes spectrum_curves.png (Figure 2: relative log amplitude against normalised frequency,
one curve per layer), spectrum_high_freq.png (its value at pi against depth, all models in
one plot), spectrum_maps.png (Figure 1: 2-D log amplitude at the end of each stage),
spectrum.json (every curve) and spectrum_summary.csv (one row per layer). See
spanet_tools/analysis/spectrum.py.
"""

import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional

# Let `python tools/analysis/spectrum.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from spanet_tools.analysis.spectrum import spectrum_report, summary_lines  # noqa: E402
from spanet_tools.catalogue import build_backbone, describe, split_name  # noqa: E402
from spanet_tools.images import image_paths  # noqa: E402

DEFAULT_MODELS = ('spanet:s', 'convnext:tiny', 'swin:tiny', 'poolformer:s24')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Fourier spectra of token-mixer outputs (SPANet paper, Figures 1 and 2).'
    )
    parser.add_argument(
        '--models',
        nargs='+',
        default=list(DEFAULT_MODELS),
        metavar='FAMILY:ARCH',
        help=f'backbones to compare (default: {" ".join(DEFAULT_MODELS)}); known: {describe()}',
    )
    parser.add_argument(
        '--images',
        help='folder of photographs (or one image); default: '
        'the colour photographs scikit-image ships',
    )
    parser.add_argument(
        '--checkpoint',
        nargs='+',
        default=[],
        metavar='NAME=PATH',
        help='weights per model, e.g. spanet:s=spanet_small.pth (SPANet, '
        'SPANetV2: release or spanet_mm layouts; others: MMPretrain '
        'checkpoints)',
    )
    parser.add_argument(
        '--size', type=int, default=224, help='images are resized and centre-cropped to SIZE x SIZE'
    )
    parser.add_argument('--out-dir', default='work_dirs/spectrum', help='output folder')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the random initialisation (models without checkpoint)',
    )
    args = parser.parse_args(argv)
    for name in args.models:
        try:
            split_name(name)
        except ValueError as error:
            parser.error(str(error))
    args.checkpoints = _parse_checkpoints(parser, args.checkpoint, args.models)
    return args


def _parse_checkpoints(parser, items: List[str], models: List[str]) -> Dict[str, str]:
    checkpoints = {}
    for item in items:
        name, sep, path = item.partition('=')
        if not sep or name not in models:
            parser.error(
                f'--checkpoint expects NAME=PATH with NAME one of the chosen models '
                f'({", ".join(models)}), got {item!r}'
            )
        if not osp.isfile(path):
            parser.error(f'--checkpoint {name}: no file at {path!r}')
        checkpoints[name] = path
    return checkpoints


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    models = {
        name: build_backbone(name, checkpoint=args.checkpoints.get(name)) for name in args.models
    }
    paths = image_paths(args.images)
    results = spectrum_report(models, paths, args.out_dir, args.size, args.checkpoints)
    print('\n'.join(summary_lines(results)))
    print(f'{len(paths)} images; figures and numbers in {args.out_dir}')


if __name__ == '__main__':
    main()
