"""Fourier analysis of token-mixer outputs (the paper's Figures 1 and 2).

For every token mixer of a backbone, a forward hook takes the mixer's output feature map,
its 2-D Fourier transform and the log amplitude ``log |F(u, v)|``, averaged over channels and
images (the analysis of Park and Kim, "How do vision transformers work?", ICLR 2022, that the
paper follows). From that centred map come

* Figure 1: the map itself (shown relative to its zero frequency);
* Figure 2: the *relative log amplitude*, the map along the diagonal from the zero frequency
  to the highest one, minus its value at zero, against the normalised frequency ``0 .. pi``.
"""

import csv
import json
import math
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..catalogue import family_of, mixer_modules
from ..images import read_rgb, to_model_input
from .hooks import capture

# Keeps the log finite where a feature map's spectrum vanishes.
LOG_EPS = 1e-6


def mean_log_amplitude(features: Tensor) -> Tensor:
    """Centred mean log amplitude of ``(B, C, H, W)`` features: ``(H, W)`` map with the zero
    frequency at ``(H // 2, W // 2)``, averaged over images and channels."""
    if features.dim() != 4:
        raise ValueError(f'Expected (B, C, H, W) features, got shape {tuple(features.shape)}')
    spectrum = torch.fft.fft2(features.detach().double())
    log_amp = torch.log(spectrum.abs() + LOG_EPS).mean(dim=(0, 1))
    return torch.fft.fftshift(log_amp)


def diagonal_profile(log_amp_map: Tensor) -> Tuple[Tensor, Tensor]:
    """Relative log amplitude along the diagonal of a centred log-amplitude map.

    Steps ``k = 0 .. min(H, W) // 2`` along both axes at once from the zero frequency; for an
    even size the last step is the Nyquist frequency (stored at index 0 after the shift).

    Returns:
        tuple[Tensor, Tensor]: Normalised frequencies (``pi * k / (min(H, W) / 2)``, so
        ``0 .. pi``) and ``log_amp(k) - log_amp(0)``.
    """
    height, width = log_amp_map.shape
    steps = min(height, width) // 2
    if steps == 0:
        raise ValueError(f'A {height}x{width} map has no frequency but zero')
    k = torch.arange(steps + 1)
    rows = (height // 2 + torch.round(k * (height / 2) / steps).long()) % height
    cols = (width // 2 + torch.round(k * (width / 2) / steps).long()) % width
    values = log_amp_map[rows, cols]
    freqs = math.pi * k.double() / (min(height, width) / 2)
    return freqs, values - values[0]


def to_nchw(module: nn.Module, args: tuple, out, channels_last: bool = False) -> Tensor:
    """A mixer's output as ``(B, C, H, W)``: as is (``(B, H, W, C)`` permuted, for mixers
    that work channels-last), or tokens ``(B, H*W, C)`` reshaped with the ``hw_shape``
    argument that token-based mixers (Swin's window attention) receive."""
    if isinstance(out, tuple):
        out = out[0]
    if out.dim() == 4:
        return out.permute(0, 3, 1, 2) if channels_last else out
    if out.dim() == 3 and len(args) > 1 and len(args[1]) == 2:
        height, width = (int(s) for s in args[1])
        batch, tokens, channels = out.shape
        if tokens != height * width:
            raise ValueError(
                f'{type(module).__name__}: {tokens} tokens do not fill the '
                f'{height}x{width} map it was given'
            )
        return out.transpose(1, 2).reshape(batch, channels, height, width)
    raise ValueError(
        f'{type(module).__name__}: cannot read a (B, C, H, W) map from an '
        f'output of shape {tuple(out.shape)}'
    )


@dataclass
class MixerSpectrum:
    """Accumulated spectrum of one mixer layer."""

    name: str
    shape: Tuple[int, int] = (0, 0)
    channels: int = 0
    images: int = 0
    log_amp_sum: Optional[Tensor] = None

    def add(self, features: Tensor) -> None:
        batch = features.shape[0]
        self.shape, self.channels = tuple(features.shape[-2:]), features.shape[1]
        summed = mean_log_amplitude(features) * batch
        self.log_amp_sum = summed if self.log_amp_sum is None else self.log_amp_sum + summed
        self.images += batch

    @property
    def log_amp_map(self) -> Tensor:
        return self.log_amp_sum / self.images

    def profile(self) -> Tuple[Tensor, Tensor]:
        return diagonal_profile(self.log_amp_map)


@torch.no_grad()
def mixer_spectra(
    model: nn.Module,
    mixers: Sequence[Tuple[str, nn.Module]],
    batches: Sequence[Tensor],
    channels_last: bool = False,
) -> List[MixerSpectrum]:
    """Run the images through ``model`` and accumulate each mixer output's spectrum
    (``channels_last``: the mixers return ``(B, H, W, C)``)."""
    spectra = {name: MixerSpectrum(name) for name, _ in mixers}

    def hook(module, args, out):
        return to_nchw(module, args, out, channels_last)

    for batch in batches:
        with capture(mixers, hook) as outputs:
            model(batch)
        for name, feats in outputs.items():
            if len(feats) != 1:
                raise RuntimeError(f'Mixer {name} ran {len(feats)} times in one forward')
            spectra[name].add(feats[0])
    return [spectra[name] for name, _ in mixers]


def stage_ends(spectra: Sequence[MixerSpectrum]) -> List[int]:
    """Indices of the last mixer at each feature size (the end of each stage)."""
    ends = []
    for i, spectrum in enumerate(spectra):
        if i + 1 == len(spectra) or spectra[i + 1].shape != spectrum.shape:
            ends.append(i)
    return ends


# -- the whole analysis, its figures and files ------------------------------------------------


def analyse(
    models: Mapping[str, nn.Module],
    images: Sequence[np.ndarray],
    size: int = 224,
    checkpoints: Optional[Mapping[str, str]] = None,
) -> dict:
    """Spectra of every mixer layer of each model, as plain numbers (the JSON content).

    Args:
        models: Catalogue name (``FAMILY:ARCH``, whose family says what the mixers are) ->
            built backbone in eval mode.
        images: ``(H, W, 3)`` RGB images, resized and centre-cropped to ``size``.
        size: Side of the model input.
        checkpoints: Catalogue name -> the weights it was loaded with, for the record.
    """
    batch = [to_model_input(image, size) for image in images]
    results = {}
    for name, model in models.items():
        family = family_of(name)
        spectra = mixer_spectra(
            model, mixer_modules(model, name), batch, channels_last=family.channels_last
        )
        layers = []
        for spectrum in spectra:
            freqs, curve = spectrum.profile()
            log_map = spectrum.log_amp_map
            centre = log_map[log_map.shape[0] // 2, log_map.shape[1] // 2]
            layers.append(
                dict(
                    name=spectrum.name,
                    shape=list(spectrum.shape),
                    channels=spectrum.channels,
                    freqs=freqs.tolist(),
                    relative_log_amplitude=curve.tolist(),
                    relative_log_amplitude_map=(log_map - centre).tolist(),
                )
            )
        results[name] = dict(
            mixer=family.mixer,
            checkpoint=(checkpoints or {}).get(name),
            stage_ends=stage_ends(spectra),
            layers=layers,
        )
    return results


def _depths(count: int) -> np.ndarray:
    return np.linspace(0, 1, count) if count > 1 else np.zeros(1)


def plot_curves(results: dict, path: str) -> None:
    """Figure 2: per model, the relative log amplitude of each layer, coloured by depth."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    names = list(results)
    fig = Figure(figsize=(3.6 * len(names), 3.4), layout='constrained')
    axes = fig.subplots(1, len(names), squeeze=False)
    cmap = colormaps['plasma']
    for ax, name in zip(axes[0], names):
        layers = results[name]['layers']
        for layer, depth in zip(layers, _depths(len(layers))):
            ax.plot(
                layer['freqs'],
                layer['relative_log_amplitude'],
                color=cmap(0.9 * depth),
                linewidth=1,
            )
        ax.set_title(f'{name}\n{results[name]["mixer"]}', fontsize=9)
        ax.set_xlabel('normalised frequency')
        ax.set_xticks([0, math.pi / 2, math.pi], ['0', 'π/2', 'π'])
        ax.axhline(0, color='grey', linewidth=0.5)
    axes[0, 0].set_ylabel('Δ log amplitude')
    mappable = ScalarMappable(cmap=cmap, norm=Normalize(0, 1 / 0.9))
    fig.colorbar(mappable, ax=axes[0].tolist(), label='depth (early → late)', ticks=[])
    fig.savefig(path, dpi=120)


def plot_high_frequency(results: dict, path: str) -> None:
    """Relative log amplitude at the highest diagonal frequency against normalised depth
    (pi for even map sizes, ``pi * (1 - 1 / size)`` for odd ones)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.4), layout='constrained')
    ax = fig.subplots()
    for name, result in results.items():
        layers = result['layers']
        ax.plot(
            _depths(len(layers)),
            [layer['relative_log_amplitude'][-1] for layer in layers],
            marker='o',
            markersize=3,
            label=f'{name} ({result["mixer"]})',
        )
    ax.set_xlabel('normalised depth')
    ax.set_ylabel('Δ log amplitude at highest frequency (π)')
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)


def plot_maps(results: dict, path: str) -> None:
    """Figure 1: log amplitude relative to the zero frequency at the end of each stage."""
    from matplotlib.figure import Figure

    names = list(results)
    columns = max(len(results[n]['stage_ends']) for n in names)
    maps = {
        n: [
            np.array(results[n]['layers'][i]['relative_log_amplitude_map'])
            for i in results[n]['stage_ends']
        ]
        for n in names
    }
    vmin = min(m.min() for ms in maps.values() for m in ms)
    # Pooling's pool(x) - x removes the mean, so its maps can lie above their zero frequency.
    vmax = max(0.0, max(m.max() for ms in maps.values() for m in ms))
    fig = Figure(figsize=(2.4 * columns, 2.4 * len(names)))
    axes = fig.subplots(len(names), columns, squeeze=False)
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
            ax.set_title(f'stage {col + 1} ({layer["shape"][0]}x{layer["shape"][1]})', fontsize=8)
            if col == 0:
                ax.set_ylabel(f'{name}\n{results[name]["mixer"]}', fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), label='log amplitude − value at 0', fraction=0.03)
    fig.savefig(path, dpi=120, bbox_inches='tight')


def write_summary(results: dict, path: str) -> None:
    """One CSV row per layer: its size and the curve at the middle and highest frequency."""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                'model',
                'layer',
                'name',
                'height',
                'width',
                'channels',
                'delta_log_amp_mid_frequency',
                'delta_log_amp_highest_frequency',
            ]
        )
        for model, result in results.items():
            for i, layer in enumerate(result['layers']):
                curve = layer['relative_log_amplitude']
                writer.writerow(
                    [
                        model,
                        i,
                        layer['name'],
                        *layer['shape'],
                        layer['channels'],
                        f'{curve[len(curve) // 2]:.4f}',
                        f'{curve[-1]:.4f}',
                    ]
                )


OUTPUT_FILES = (
    'spectrum_curves.png',
    'spectrum_high_freq.png',
    'spectrum_maps.png',
    'spectrum_summary.csv',
    'spectrum.json',
)


def spectrum_report(
    models: Mapping[str, nn.Module],
    image_files: Sequence[str],
    out_dir: str,
    size: int = 224,
    checkpoints: Optional[Mapping[str, str]] = None,
) -> dict:
    """:func:`analyse` the images with every model and write the figures and numbers
    (:data:`OUTPUT_FILES`) into ``out_dir``.

    Returns:
        dict: The analysis (catalogue name -> mixer, stage ends and layers).
    """
    images = [read_rgb(p) for p in image_files]
    results = analyse(models, images, size, checkpoints)
    os.makedirs(out_dir, exist_ok=True)
    plot_curves(results, osp.join(out_dir, 'spectrum_curves.png'))
    plot_high_frequency(results, osp.join(out_dir, 'spectrum_high_freq.png'))
    plot_maps(results, osp.join(out_dir, 'spectrum_maps.png'))
    write_summary(results, osp.join(out_dir, 'spectrum_summary.csv'))
    with open(osp.join(out_dir, 'spectrum.json'), 'w') as f:
        json.dump(dict(images=list(image_files), size=size, models=results), f)
    return results


def summary_lines(results: dict) -> List[str]:
    """One line per model: its mixers and the relative log amplitude at the highest
    frequency (mean over layers, last layer)."""
    lines = []
    for name, result in results.items():
        highest = [layer['relative_log_amplitude'][-1] for layer in result['layers']]
        lines.append(
            f'{name:22s} {len(highest):3d} mixers  Δlog amplitude at the highest '
            f'frequency: mean {np.mean(highest):+.2f}, last layer {highest[-1]:+.2f}'
        )
    return lines
