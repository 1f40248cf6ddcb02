"""SPAM context maps overlaid on photographs: the paper's Figure 4 and Figure S1.

Examples::

    # the last SPAM layer of SPANet-S (as in Figure S1), the photographs scikit-image ships
    python tools/analysis/context_map.py --checkpoint spanet_small.pth --out-dir work_dirs/ctx
    python tools/analysis/context_map.py --images my_photos/ --stage 2 --block 5 --reduce mean

For each image, one row: the input, one panel per balance λ (that Spectral Pooling Gate's
output) and the aggregated context (their sum), each reduced over channels (``--reduce``:
``norm``, the root mean square, by default; ``mean``; ``absmean``), upsampled to the
image's size, scaled to [0, 1] per panel and overlaid on the image. Without
``--checkpoint`` the weights are random (a sanity check of the tool, not of the model).
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spanet_mm.analysis.common import (image_paths, load_backbone_checkpoint,  # noqa: E402
                                       read_rgb, to_model_input)
from spanet_mm.analysis.context import REDUCTIONS, context_maps, image_size_maps  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='SPAM gate and context maps overlaid on '
                                     'images (SPANet paper, Figures 4 and S1).')
    parser.add_argument('--arch', default='s', help='SPANet arch (s, m, mx, b, bx)')
    parser.add_argument('--checkpoint', help='SPANet weights (release or spanet_mm layout)')
    parser.add_argument('--images', help='folder of photographs (or one image); default: '
                        'the colour photographs scikit-image ships')
    parser.add_argument('--stage', type=int, default=-1, help='stage index (default: last)')
    parser.add_argument('--block', type=int, default=-1,
                        help='block index within the stage (default: last)')
    parser.add_argument('--reduce', default='norm', choices=sorted(REDUCTIONS),
                        help='channel reduction of each map (default: norm, the RMS)')
    parser.add_argument('--size', type=int, default=224,
                        help='the shorter image side the model sees (aspect ratio kept)')
    parser.add_argument('--alpha', type=float, default=0.5, help='opacity of the overlay')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random initialisation (without --checkpoint)')
    parser.add_argument('--out', default='work_dirs/context_map/context_map.png',
                        help='output PNG')
    return parser.parse_args(argv)


def build_model(arch, checkpoint: Optional[str]) -> torch.nn.Module:
    from spanet_mm import SPANet
    model = SPANet(arch=arch)
    if checkpoint:
        load_backbone_checkpoint(model, checkpoint)
    model.eval()
    return model


def image_maps(model: torch.nn.Module, image: np.ndarray, args: argparse.Namespace) -> dict:
    """Panel title -> ``(H, W)`` map in [0, 1] at the image's own size."""
    maps = context_maps(model, to_model_input(image, args.size, crop=False), args.stage,
                        args.block, args.reduce)
    return {title: m[0].numpy() for title, m in
            image_size_maps(maps, image.shape[:2]).items()}


def plot(images: List[np.ndarray], panels: List[dict], title: str, path: str,
         alpha: float) -> None:
    columns = 1 + len(panels[0])
    fig, axes = plt.subplots(len(images), columns, figsize=(2.6 * columns, 2.6 * len(images)),
                             squeeze=False, layout='constrained')
    for row, (image, maps) in enumerate(zip(images, panels)):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title('input' if row == 0 else '', fontsize=9)
        for col, (name, heat) in enumerate(maps.items(), start=1):
            axes[row, col].imshow(image)
            axes[row, col].imshow(heat, cmap='jet', alpha=alpha, vmin=0, vmax=1)
            if row == 0:
                axes[row, col].set_title(name, fontsize=9)
    for ax in axes.ravel():
        ax.axis('off')
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None, arch: Optional[dict] = None) -> List[dict]:
    """Make the figure; ``arch`` (a SPANet arch dict) replaces ``--arch`` (for tests).

    Returns:
        list[dict]: Per image, panel title -> ``(H, W)`` map at the image's size.
    """
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model = build_model(arch if arch is not None else args.arch, args.checkpoint)
    paths = image_paths(args.images)
    images = [read_rgb(p) for p in paths]
    panels = [image_maps(model, image, args) for image in images]
    stage = args.stage % len(model.stages)
    block = args.block % len(model.stages[stage])
    weights = args.checkpoint or 'random weights'
    title = (f'SPANet stage {stage + 1}, block {block + 1} ({weights}); maps: '
             f'{args.reduce} over channels, each scaled to [0, 1]')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    plot(images, panels, title, args.out, args.alpha)
    print(f'{len(images)} images -> {args.out}')
    return panels


if __name__ == '__main__':
    main()
