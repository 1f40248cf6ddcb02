"""Context maps of the spectral token mixers, overlaid on photographs.

* SPANet's SPAM (the paper's Figure 4 and Figure S1): for one SPAM layer, the query
  ``dwconv(proj_in(norm1(x)))`` is recomputed from the token mixer's input (captured with a
  forward pre-hook), then each Spectral Pooling Gate's output (:meth:`SPAM.gate_outputs`, one
  per balance λ) and their sum, the aggregated context (:meth:`SPAM.context`).
* SPANetV2's ExSPAM: for one ExSPAM layer, each head's filtered context, i.e. the head's
  channels of ``ctx(x)`` through its depth-wise conv and its learned spectral gain
  (``irfft2(rfft2(.) * sigmoid(filter_i))``), and the mixed context (``proj`` of the
  interleaved heads), which modulates the query. ExSPAM has no method returning the
  per-head contexts, so :func:`exspam_head_contexts` composes them from its public parts
  (``ctx``, ``local_convs``, ``spectral_gain``, ``modulate_spectrum``, ``proj``) and the
  interleaved channel order its docstring defines; a test checks that they rebuild the
  mixer's output exactly.

Each map is reduced over channels to one ``(B, h, w)`` map (``reduce``), upsampled to the
image's size, scaled to ``[0, 1]`` and overlaid on the image.
"""

import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import to_model_input
from .hooks import capture

# How a (B, C, h, w) map becomes one (B, h, w) map.
REDUCTIONS = {
    # root mean square over channels: how strongly the gate responds, whatever the sign
    'norm': lambda t: t.pow(2).mean(dim=1).sqrt(),
    'mean': lambda t: t.mean(dim=1),
    'absmean': lambda t: t.abs().mean(dim=1),
}


@dataclass
class ContextMaps:
    """Channel-reduced maps of one token-mixer layer, at the layer's resolution.

    Attributes:
        mixer (str): The mixer's class name.
        panels (dict[str, Tensor]): Panel title -> ``(B, h, w)`` map, in display order.
    """

    mixer: str
    panels: Dict[str, Tensor]


def mixer_block(model: nn.Module, stage: int, block: int) -> nn.Module:
    """The block at ``stages[stage][block]`` of a SPANet or SPANetV2 (negative indices count
    from the end)."""
    stages = getattr(model, 'stages', None)
    if stages is None:
        raise TypeError(
            f'Expected a SPANet or SPANetV2 backbone with .stages, got {type(model).__name__}'
        )
    if not -len(stages) <= stage < len(stages):
        raise IndexError(f'stage must be in [{-len(stages)}, {len(stages) - 1}], got {stage}')
    blocks = stages[stage]
    if not -len(blocks) <= block < len(blocks):
        raise IndexError(
            f'stage {stage} has {len(blocks)} blocks; block must be in '
            f'[{-len(blocks)}, {len(blocks) - 1}], got {block}'
        )
    return blocks[block]


def _mixer_input(model: nn.Module, mixer: nn.Module, x: Tensor) -> Tensor:
    """What ``mixer`` receives when ``model(x)`` runs."""
    with capture([('mixer', mixer)], lambda m, args, out: args[0], pre=True) as inputs:
        model(x)
    return inputs['mixer'][0]


def spam_context(mixer: nn.Module, mixer_input: Tensor) -> Dict[str, Tensor]:
    """SPAM: title -> ``(B, C, h, w)``: each gate's output (one per λ) and their sum."""
    query = mixer.dwconv(mixer.proj_in(mixer_input))
    panels = {f'λ = {b:g}': gate for b, gate in zip(mixer.balances, mixer.gate_outputs(query))}
    panels['aggregated context'] = mixer.context(query)
    return panels


def exspam_head_contexts(mixer: nn.Module, mixer_input: Tensor) -> List[Tensor]:
    """ExSPAM: each head's filtered context, ``(B, head_dims, h, w)`` per head.

    Head ``i`` takes channels ``[i * head_dims, (i + 1) * head_dims)`` of ``ctx(x)``, its
    depth-wise conv, then the spectral gain of its filter: the gain's channels
    ``j * num_heads + i`` (ExSPAM's interleaved order).
    """
    _, height, width, _ = mixer_input.shape
    context = mixer.ctx(mixer_input).permute(0, 3, 1, 2)
    gain = mixer.spectral_gain(height, width)
    heads = []
    for i, conv in enumerate(mixer.local_convs):
        local = conv(context[:, i * mixer.head_dims : (i + 1) * mixer.head_dims])
        heads.append(mixer.modulate_spectrum(local, gain[i :: mixer.num_heads]))
    return heads


def exspam_context(mixer: nn.Module, mixer_input: Tensor) -> Dict[str, Tensor]:
    """ExSPAM: title -> ``(B, C, h, w)``: each head's filtered context and the mixed context
    (``proj`` of the interleaved heads, what multiplies the query)."""
    heads = exspam_head_contexts(mixer, mixer_input)
    panels = {
        f'head {i + 1} ({conv.kernel_size[0]}x{conv.kernel_size[1]} conv + filter)': h
        for i, (conv, h) in enumerate(zip(mixer.local_convs, heads))
    }
    interleaved = torch.stack(heads, dim=2).flatten(1, 2)
    panels['mixed context (proj)'] = mixer.proj(interleaved)
    return panels


def _context_readers():
    """Mixer class -> function giving its context panels."""
    from spanet_mm.models import SPAM

    readers = {SPAM: spam_context}
    try:
        from spanet_mm.models.exspam import ExSPAM

        readers[ExSPAM] = exspam_context
    except ImportError:  # an installation without SPANetV2
        pass
    return readers


@torch.no_grad()
def context_maps(
    model: nn.Module, x: Tensor, stage: int = -1, block: int = -1, reduce: str = 'norm'
) -> ContextMaps:
    """The context panels of ``model.stages[stage][block].token_mixer`` (a SPAM or an
    ExSPAM) for input ``x``, each reduced over channels to ``(B, h, w)``."""
    if reduce not in REDUCTIONS:
        raise ValueError(f'reduce must be one of {sorted(REDUCTIONS)}, got {reduce!r}')
    mixer = mixer_block(model, stage, block).token_mixer
    readers = _context_readers()
    reader = next((fn for cls, fn in readers.items() if isinstance(mixer, cls)), None)
    if reader is None:
        spectral = [
            f'stage {i}'
            for i, blocks in enumerate(model.stages)
            if isinstance(blocks[0].token_mixer, tuple(readers))
        ]
        raise TypeError(
            f'stages[{stage}][{block}] mixes tokens with '
            f'{type(mixer).__name__}; context maps need a '
            f'{" or ".join(c.__name__ for c in readers)} (found in '
            f'{", ".join(spectral) or "no stage"})'
        )
    panels = reader(mixer, _mixer_input(model, mixer, x))
    reduce_fn = REDUCTIONS[reduce]
    return ContextMaps(
        type(mixer).__name__, {title: reduce_fn(value.float()) for title, value in panels.items()}
    )


def to_image_size(maps: Tensor, size: Tuple[int, int]) -> Tensor:
    """Upsample ``(B, h, w)`` maps bilinearly to ``size = (H, W)`` and scale each to
    ``[0, 1]`` (a constant map becomes zeros)."""
    up = F.interpolate(
        maps[:, None].double(), size=tuple(size), mode='bilinear', align_corners=False
    )[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (up - low) / span.clamp_min(1e-12), torch.zeros_like(up))


def image_context_maps(
    model: nn.Module,
    image: np.ndarray,
    size: int = 224,
    stage: int = -1,
    block: int = -1,
    reduce: str = 'norm',
) -> Dict[str, np.ndarray]:
    """Panel title -> ``(H, W)`` map in ``[0, 1]`` at the image's own size, the model seeing
    the image with its shorter side at ``size`` (aspect ratio kept)."""
    maps = context_maps(model, to_model_input(image, size, crop=False), stage, block, reduce)
    return {
        title: to_image_size(value, image.shape[:2])[0].numpy()
        for title, value in maps.panels.items()
    }


def plot_context_maps(
    images: Sequence[np.ndarray],
    panels: Sequence[Dict[str, np.ndarray]],
    title: str,
    path: str,
    alpha: float = 0.5,
) -> None:
    """One row per image: the image, then each panel overlaid on it."""
    from matplotlib.figure import Figure

    columns = 1 + len(panels[0])
    fig = Figure(figsize=(2.6 * columns, 2.6 * len(images)), layout='constrained')
    axes = fig.subplots(len(images), columns, squeeze=False)
    for row, (image, maps) in enumerate(zip(images, panels)):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title('input' if row == 0 else '', fontsize=9)
        for col, (name, heat) in enumerate(maps.items(), start=1):
            axes[row, col].imshow(image)
            axes[row, col].imshow(heat, cmap='jet', alpha=alpha, vmin=0, vmax=1)
            if row == 0:
                axes[row, col].set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.axis('off')
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110)


def context_map_figure(
    model: nn.Module,
    images: Sequence[np.ndarray],
    out: str,
    size: int = 224,
    stage: int = -1,
    block: int = -1,
    reduce: str = 'norm',
    alpha: float = 0.5,
    label: Optional[str] = None,
) -> List[Dict[str, np.ndarray]]:
    """Compute the context maps of one layer for every image and draw them into ``out``.

    Args:
        model (nn.Module): A SPANet or SPANetV2 backbone (in eval mode).
        images (sequence[np.ndarray]): ``(H, W, 3)`` RGB images.
        out (str): The PNG to write (its folder is created).
        size (int): The shorter image side the model sees.
        stage, block (int): The layer, ``model.stages[stage][block]``.
        reduce (str): Channel reduction, one of :data:`REDUCTIONS`.
        alpha (float): Opacity of the overlay.
        label (str, optional): What the model is, for the figure's title.

    Returns:
        list[dict]: Per image, panel title -> ``(H, W)`` map at the image's size.
    """
    panels = [image_context_maps(model, image, size, stage, block, reduce) for image in images]
    stage_index = stage % len(model.stages)
    block_index = block % len(model.stages[stage_index])
    mixer = type(model.stages[stage_index][block_index].token_mixer).__name__
    title = (
        f'{label or type(model).__name__}: {mixer} of stage {stage_index + 1}, block '
        f'{block_index + 1}; maps: {reduce} over channels, each scaled to [0, 1]'
    )
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    plot_context_maps(images, panels, title, out, alpha)
    return panels
