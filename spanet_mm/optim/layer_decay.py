"""Layer-wise (or stage-wise) learning-rate decay for SPANet and SPANetV2 backbones.

Fine-tuning an ImageNet backbone for detection or segmentation, the SPANetV2 authors (as
ConvNeXt before them) give layers nearer the input smaller learning rates: the layer with id
``k`` trains at ``lr * rate ** (num_layers + 1 - k)``, where ``num_layers`` is the id of the
backbone's last layer, so the last layer gets ``lr * rate`` and everything after the backbone
(neck, heads) the full ``lr``.

Their constructor numbers the layers for SPANetV2-S18 only (the third stage's blocks get ids
``3 + block // 3`` whatever its depth), so with the 18-block third stage of S36, M36 and B36
the ids pass ``num_layers`` and those blocks train *faster* than the heads (scales above 1).
:class:`LayerDecayOptimWrapperConstructor` numbers the layers from the backbone's actual
depths instead; for S18 the numbering is theirs, exactly.
"""

import math
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from ..models.base import SpectralBackbone

# Consecutive blocks of a stage that share one layer id in ``layer_wise`` decay. Three is
# the authors' (and ConvNeXt's) grouping of the third stage, applied here to every stage, so
# the S18 numbering (3-3-9-3 blocks: ids 1, 2, 3-5, 6) is theirs.
BLOCKS_PER_LAYER = 3

DECAY_TYPES = ('layer_wise', 'stage_wise')
PARAMWISE_KEYS = ('layer_decay_rate', 'decay_type', 'num_layers')


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def backbone_layer_ids(
    backbone: SpectralBackbone, decay_type: str = 'layer_wise'
) -> Tuple[Dict[int, int], int]:
    """The layer id of every parameter of a backbone's stem, down-sampling layers and blocks.

    ``layer_wise``: the stem is layer 0; the blocks of each stage are numbered in groups of
    :data:`BLOCKS_PER_LAYER`, stage after stage, from 1; a down-sampling layer shares the id of
    the first blocks of the stage it leads into. ``stage_wise``: the stem and all
    down-sampling layers are layer 0 and the blocks of stage ``i`` are layer ``i + 1`` (the
    authors' and ConvNeXt's convention).

    Parameters not listed (the output norms ``norm{i}``, which the ImageNet weights do not
    hold for dense tasks) are to be treated like the neck and heads.

    Args:
        backbone (SpectralBackbone): A :class:`~spanet_mm.SPANet` or
            :class:`~spanet_mm.SPANetV2`.
        decay_type (str): ``'layer_wise'`` or ``'stage_wise'``.

    Returns:
        tuple: ``{id(parameter): layer id}`` and the id of the last layer.
    """
    if decay_type not in DECAY_TYPES:
        raise ValueError(f'decay_type must be one of {DECAY_TYPES}, got {decay_type!r}')
    ids: Dict[int, int] = {}

    def assign(module: nn.Module, layer_id: int) -> None:
        for param in module.parameters():
            ids[id(param)] = layer_id

    if decay_type == 'stage_wise':
        for i in range(backbone.num_stages):
            assign(backbone._stage_entry(i), 0)
            assign(backbone.stages[i], i + 1)
        return ids, backbone.num_stages

    assign(backbone._stage_entry(0), 0)
    first = 1  # id of the first blocks of the current stage
    for i, depth in enumerate(backbone.depths):
        if i > 0:
            assign(backbone._stage_entry(i), first)
        for j, block in enumerate(backbone.stages[i]):
            assign(block, first + j // BLOCKS_PER_LAYER)
        first += math.ceil(depth / BLOCKS_PER_LAYER)
    return ids, first - 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise learning-rate decay of a SPANet or
    SPANetV2 backbone (registered in MMEngine's root registry: MMDetection, MMSegmentation
    and MMPretrain configs all find it).

    A parameter of layer ``k`` (see :func:`backbone_layer_ids`) gets the learning rate
    ``lr * layer_decay_rate ** (num_layers + 1 - k)``; the neck, the heads and the backbone's
    output norms get ``lr``. Biases and all parameters with at most one dimension (norms,
    ResScale and StarReLU scalars, ...) get no weight decay, everything else the optimizer's
    ``weight_decay``, as in the authors' constructor.

    Example:
        >>> optim_wrapper = dict(
        ...     type='OptimWrapper',
        ...     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        ...     constructor='LayerDecayOptimWrapperConstructor',
        ...     paramwise_cfg=dict(layer_decay_rate=0.95, decay_type='layer_wise'))

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config, with ``optimizer`` (which
            must set ``lr``).
        paramwise_cfg (dict): ``layer_decay_rate`` (float in (0, 1], required),
            ``decay_type`` (``'layer_wise'``, the default, or ``'stage_wise'``) and
            ``num_layers`` (int, optional): the id given to the backbone's last layer.
            By default it is counted from the backbone's depths; a larger value lowers the
            whole backbone's learning rate by ``rate ** (extra)`` (the authors' UperNet recipe
            uses 7 for S18 and 11 for S36 with ``stage_wise``); a smaller one is an error,
            since layers would then learn faster than the heads.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        cfg = self.paramwise_cfg
        name = type(self).__name__
        unknown = sorted(set(cfg) - set(PARAMWISE_KEYS))
        if unknown:
            raise ValueError(
                f'{name}: unknown paramwise_cfg keys {unknown}; expected {list(PARAMWISE_KEYS)}'
            )
        if 'layer_decay_rate' not in cfg:
            raise ValueError(
                f'{name}: paramwise_cfg must set layer_decay_rate (a number in '
                f'(0, 1]), got {dict(cfg)}'
            )
        rate = cfg['layer_decay_rate']
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate <= 1:
            raise ValueError(f'{name}: layer_decay_rate must be in (0, 1], got {rate!r}')
        decay_type = cfg.get('decay_type', 'layer_wise')
        if decay_type not in DECAY_TYPES:
            raise ValueError(f'{name}: decay_type must be one of {DECAY_TYPES}, got {decay_type!r}')
        num_layers = cfg.get('num_layers')
        if num_layers is not None and not (_is_int(num_layers) and num_layers > 0):
            raise ValueError(
                f'{name}: num_layers must be a positive int or None, got {num_layers!r}'
            )
        if self.base_lr is None:
            raise ValueError(
                f'{name}: the optimizer config must set lr, got {dict(self.optimizer_cfg)}'
            )
        self.layer_decay_rate = float(rate)
        self.decay_type = decay_type
        self.num_layers = num_layers

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '', **kwargs) -> None:
        """Add ``module``'s trainable parameters to ``params`` as one group per layer id and
        weight decay (the whole model at once: ``prefix`` must be empty)."""
        if prefix:
            raise ValueError(
                f'{type(self).__name__} groups a whole model; it was given the submodule {prefix!r}'
            )
        backbone = (
            module if isinstance(module, SpectralBackbone) else getattr(module, 'backbone', None)
        )
        if not isinstance(backbone, SpectralBackbone):
            found = type(backbone).__name__ if backbone is not None else 'no backbone'
            raise TypeError(
                f'{type(self).__name__} works on a model with a SPANet or '
                f'SPANetV2 backbone (or on the backbone itself); '
                f'{type(module).__name__} has {found}'
            )
        layer_ids, last = backbone_layer_ids(backbone, self.decay_type)
        num_layers = last if self.num_layers is None else self.num_layers
        if num_layers < last:
            raise ValueError(
                f'num_layers={num_layers} is smaller than the {last} layers '
                f'({self.decay_type}) of this {type(backbone).__name__} with depths '
                f'{backbone.depths}: its last layers would get lr scales above 1. Leave '
                f'num_layers unset to count them from the depths'
            )
        head_id = num_layers + 1

        groups: 'OrderedDict[Tuple[int, bool], dict]' = OrderedDict()
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue  # frozen stages
            layer_id = layer_ids.get(id(param), head_id)
            # As the authors (and timm): no weight decay on biases and 1-D parameters.
            no_decay = param.ndim <= 1 or name.endswith('.bias')
            key = (layer_id, no_decay)
            if key not in groups:
                scale = self.layer_decay_rate ** (head_id - layer_id)
                group = dict(params=[], lr=self.base_lr * scale, lr_scale=scale, layer_id=layer_id)
                if no_decay:
                    group['weight_decay'] = 0.0
                elif self.base_wd is not None:
                    group['weight_decay'] = self.base_wd
                groups[key] = group
            groups[key]['params'].append(param)
        # Input side first, so that logs and state dicts read in network order.
        params.extend(groups[key] for key in sorted(groups))
        print_log(
            f'{type(self).__name__}: {self.decay_type} decay {self.layer_decay_rate} over '
            f'{num_layers} backbone layers of {type(backbone).__name__} (depths '
            f'{backbone.depths}): lr scales from '
            f'{self.layer_decay_rate ** (head_id):.4g} (stem) to 1 (neck and heads), '
            f'{len(groups)} parameter groups',
            logger='current',
        )
