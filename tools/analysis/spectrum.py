"""Fourier spectra of token-mixer outputs: the paper's Figures 1 and 2, for SPANet and others.

Examples::

    # random weights (a sanity check), the photographs scikit-image ships
    python tools/analysis/spectrum.py --out-dir work_dirs/spectrum
    # trained weights and your own photographs
    python tools/analysis/spectrum.py --images my_photos/ \
        --checkpoint spanet-s=spanet_small.pth convnext-t=convnext-tiny.pth \
        --models spanet-s convnext-t swin-t

Writes ``spectrum_curves.png`` (Figure 2: relative log amplitude against normalised
frequency, one curve per layer), ``spectrum_high_freq.png`` (its value at pi against
depth, all models in one plot), ``spectrum_maps.png``
(Figure 1: 2-D log amplitude at the end of each stage), ``spectrum.json`` (every curve) and
``spectrum_summary.csv`` (one row per layer). See :mod:`spanet_mm.analysis.spectrum`.
"""
import argparse
import csv
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spanet_mm.analysis.common import image_paths, read_rgb, to_model_input  # noqa: E402
from spanet_mm.analysis.spectrum import (BACKBONES, build_backbone, mixer_modules,  # noqa: E402
                                         mixer_spectra, stage_ends)

DEFAULT_MODELS = ('spanet-s', 'convnext-t', 'swin-t', 'poolformer-s24')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Fourier spectra of token-mixer outputs '
                                     '(SPANet paper, Figures 1 and 2).')
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        choices=sorted(BACKBONES), metavar='NAME',
                        help=f'backbones to compare (default: {" ".join(DEFAULT_MODELS)}; '
                        f'known: {", ".join(BACKBONES)})')
    parser.add_argument('--images', help='folder of photographs (or one image); default: '
                        'the colour photographs scikit-image ships')
    parser.add_argument('--checkpoint', nargs='+', default=[], metavar='NAME=PATH',
                        help='weights per model, e.g. spanet-s=spanet_small.pth (SPANet: '
                        'release or spanet_mm layouts; others: MMPretrain checkpoints)')
    parser.add_argument('--size', type=int, default=224,
                        help='images are resized and centre-cropped to SIZE x SIZE')
    parser.add_argument('--out-dir', default='work_dirs/spectrum', help='output folder')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random initialisation (models without checkpoint)')
    args = parser.parse_args(argv)
    args.checkpoints = _parse_checkpoints(parser, args.checkpoint, args.models)
    return args


def _parse_checkpoints(parser, items: List[str], models: List[str]) -> Dict[str, str]:
    checkpoints = {}
    for item in items:
        name, sep, path = item.partition('=')
        if not sep or name not in models:
            parser.error(f'--checkpoint expects NAME=PATH with NAME one of the chosen models '
                         f'({", ".join(models)}), got {item!r}')
        if not osp.isfile(path):
            parser.error(f'--checkpoint {name}: no file at {path!r}')
        checkpoints[name] = path
    return checkpoints


def analyse(models: List[str], images: List[np.ndarray], size: int,
            checkpoints: Dict[str, str], archs: Optional[Dict[str, dict]] = None) -> dict:
    """Spectra of every mixer layer of each model, as plain numbers (the JSON content)."""
    batch = [to_model_input(image, size) for image in images]
    results = {}
    for name in models:
        model = build_backbone(name, checkpoints.get(name), (archs or {}).get(name))
        spectra = mixer_spectra(model, mixer_modules(model, name), batch)
        layers = []
        for spectrum in spectra:
            freqs, curve = spectrum.profile()
            log_map = spectrum.log_amp_map
            centre = log_map[log_map.shape[0] // 2, log_map.shape[1] // 2]
            layers.append(dict(name=spectrum.name, shape=list(spectrum.shape),
                               channels=spectrum.channels, freqs=freqs.tolist(),
                               relative_log_amplitude=curve.tolist(),
                               relative_log_amplitude_map=(log_map - centre).tolist()))
        results[name] = dict(mixer=BACKBONES[name].mixer,
                             checkpoint=checkpoints.get(name),
                             stage_ends=stage_ends(spectra), layers=layers)
    return results


def plot_curves(results: dict, path: str) -> None:
    """Figure 2: per model, the relative log amplitude of each layer, coloured by depth."""
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False,
                             sharey=False, layout='constrained')
    cmap = plt.get_cmap('plasma')
    for ax, name in zip(axes[0], names):
        layers = results[name]['layers']
        for layer, depth in zip(layers, _depths(len(layers))):
            ax.plot(layer['freqs'], layer['relative_log_amplitude'], color=cmap(0.9 * depth),
                    linewidth=1)
        ax.set_title(f'{name}\n{results[name]["mixer"]}', fontsize=9)
        ax.set_xlabel('normalised frequency')
        ax.set_xticks([0, math.pi / 2, math.pi], ['0', 'π/2', 'π'])
        ax.axhline(0, color='grey', linewidth=0.5)
    axes[0, 0].set_ylabel('Δ log amplitude')
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1 / 0.9))
    fig.colorbar(mappable, ax=axes[0].tolist(), label='depth (early → late)', ticks=[])
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_high_frequency(results: dict, path: str) -> None:
    """Relative log amplitude at the highest diagonal frequency against normalised depth
    (pi for even map sizes, ``pi * (1 - 1 / size)`` for odd ones)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4), layout='constrained')
    for name, result in results.items():
        layers = result['layers']
        ax.plot(_depths(len(layers)), [layer['relative_log_amplitude'][-1] for layer in layers],
                marker='o', markersize=3, label=f'{name} ({result["mixer"]})')
    ax.set_xlabel('normalised depth')
    ax.set_ylabel('Δ log amplitude at highest frequency (π)')
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _depths(count: int) -> np.ndarray:
    return np.linspace(0, 1, count) if count > 1 else np.zeros(1)


def plot_maps(results: dict, path: str) -> None:
    """Figure 1: log amplitude relative to the zero frequency at the end of each stage."""
    names = list(results)
    columns = max(len(results[n]['stage_ends']) for n in names)
    maps = {n: [np.array(results[n]['layers'][i]['relative_log_amplitude_map'])
                for i in results[n]['stage_ends']] for n in names}
    vmin = min(m.min() for ms in maps.values() for m in ms)
    # Pooling's pool(x) - x removes the mean, so its maps can lie above their zero frequency.
    vmax = max(0.0, max(m.max() for ms in maps.values() for m in ms))
    fig, axes = plt.subplots(len(names), columns, figsize=(2.4 * columns, 2.4 * len(names)),
                             squeeze=False)
    image = None
    for row, name in enumerate(names):
        for col in range(columns):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(maps[name]):
                ax.axis('off')
                continue
            layer = results[name]['layers'][results[name]['stage_ends'][col]]
            image = ax.imshow(maps[name][col], cmap='inferno', vmin=vmin, vmax=vmax)
            ax.set_title(f'stage {col + 1} ({layer["shape"][0]}x{layer["shape"][1]})',
                         fontsize=8)
            if col == 0:
                ax.set_ylabel(f'{name}\n{results[name]["mixer"]}', fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), label='log amplitude − value at 0',
                 fraction=0.03)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def write_summary(results: dict, path: str) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['model', 'layer', 'name', 'height', 'width', 'channels',
                         'delta_log_amp_mid_frequency', 'delta_log_amp_highest_frequency'])
        for model, result in results.items():
            for i, layer in enumerate(result['layers']):
                curve = layer['relative_log_amplitude']
                writer.writerow([model, i, layer['name'], *layer['shape'], layer['channels'],
                                 f'{curve[len(curve) // 2]:.4f}', f'{curve[-1]:.4f}'])


def main(argv: Optional[List[str]] = None, archs: Optional[Dict[str, dict]] = None) -> dict:
    """Run the analysis; ``archs`` (model name -> SPANet arch dict) is for tests."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    paths = image_paths(args.images)
    images = [read_rgb(p) for p in paths]
    results = analyse(args.models, images, args.size, args.checkpoints, archs)
    os.makedirs(args.out_dir, exist_ok=True)
    plot_curves(results, osp.join(args.out_dir, 'spectrum_curves.png'))
    plot_high_frequency(results, osp.join(args.out_dir, 'spectrum_high_freq.png'))
    plot_maps(results, osp.join(args.out_dir, 'spectrum_maps.png'))
    write_summary(results, osp.join(args.out_dir, 'spectrum_summary.csv'))
    with open(osp.join(args.out_dir, 'spectrum.json'), 'w') as f:
        json.dump(dict(images=paths, size=args.size, models=results), f)
    for name, result in results.items():
        last = result['layers'][-1]['relative_log_amplitude'][-1]
        mean = np.mean([layer['relative_log_amplitude'][-1] for layer in result['layers']])
        print(f'{name:16s} {len(result["layers"]):3d} mixers  Δlog amplitude at the highest '
              f'frequency: mean {mean:+.2f}, last layer {last:+.2f}')
    print(f'{len(paths)} images; figures and numbers in {args.out_dir}')
    return results


if __name__ == '__main__':
    main()
