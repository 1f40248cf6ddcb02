"""SPAM context maps (the paper's Figure 4 and Figure S1).

For one SPAM layer, the query ``dwconv(proj_in(norm1(x)))`` is recomputed from the token
mixer's input (captured with a forward pre-hook), then each Spectral Pooling Gate's output
(:meth:`SPAM.gate_outputs`, one per balance) and their sum, the aggregated context
(:meth:`SPAM.context`), are reduced over channels to one map each.
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import capture

# How a (B, C, h, w) gate output becomes one (B, h, w) map.
REDUCTIONS = {
    # root mean square over channels: how strongly the gate responds, whatever the sign
    'norm': lambda t: t.pow(2).mean(dim=1).sqrt(),
    'mean': lambda t: t.mean(dim=1),
    'absmean': lambda t: t.abs().mean(dim=1),
}


@dataclass
class ContextMaps:
    """Channel-reduced maps of one SPAM layer, at the layer's resolution.

    Attributes:
        balances (tuple[float]): Balance of each gate.
        gates (list[Tensor]): One ``(B, h, w)`` map per gate, in ``balances`` order.
        context (Tensor): ``(B, h, w)`` map of the aggregated context.
    """
    balances: Tuple[float, ...]
    gates: List[Tensor]
    context: Tensor


def spam_block(model: nn.Module, stage: int, block: int) -> nn.Module:
    """The SPANet block at ``stages[stage][block]`` (negative indices count from the end)."""
    stages = getattr(model, 'stages', None)
    if stages is None:
        raise TypeError(f'Expected a SPANet backbone with .stages, got {type(model).__name__}')
    if not -len(stages) <= stage < len(stages):
        raise IndexError(f'stage must be in [{-len(stages)}, {len(stages) - 1}], got {stage}')
    blocks = stages[stage]
    if not -len(blocks) <= block < len(blocks):
        raise IndexError(f'stage {stage} has {len(blocks)} blocks; block must be in '
                         f'[{-len(blocks)}, {len(blocks) - 1}], got {block}')
    return blocks[block]


@torch.no_grad()
def context_maps(model: nn.Module, x: Tensor, stage: int = -1, block: int = -1,
                 reduce: str = 'norm') -> ContextMaps:
    """Gate and context maps of ``model.stages[stage][block].token_mixer`` for input ``x``."""
    if reduce not in REDUCTIONS:
        raise ValueError(f'reduce must be one of {sorted(REDUCTIONS)}, got {reduce!r}')
    mixer = spam_block(model, stage, block).token_mixer
    with capture([('mixer', mixer)], lambda m, args, out: args[0], pre=True) as inputs:
        model(x)
    mixer_input = inputs['mixer'][0]
    query = mixer.dwconv(mixer.proj_in(mixer_input))
    reduce_fn = REDUCTIONS[reduce]
    return ContextMaps(
        balances=tuple(mixer.balances),
        gates=[reduce_fn(gate) for gate in mixer.gate_outputs(query)],
        context=reduce_fn(mixer.context(query)))


def to_image_size(maps: Tensor, size: Tuple[int, int]) -> Tensor:
    """Upsample ``(B, h, w)`` maps bilinearly to ``size = (H, W)`` and scale each to
    ``[0, 1]`` (a constant map becomes zeros)."""
    up = F.interpolate(maps[:, None].double(), size=tuple(size), mode='bilinear',
                       align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (up - low) / span.clamp_min(1e-12), torch.zeros_like(up))


def image_size_maps(maps: ContextMaps, size: Tuple[int, int]) -> Dict[str, Tensor]:
    """Panel title -> ``(B, H, W)`` map in ``[0, 1]`` at the image's size."""
    panels = {f'λ = {b:g}': to_image_size(g, size) for b, g in zip(maps.balances, maps.gates)}
    panels['aggregated context'] = to_image_size(maps.context, size)
    return panels
