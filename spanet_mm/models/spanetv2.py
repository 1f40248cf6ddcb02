"""SPANetV2 backbone (TPAMI 2026): a channels-last MetaFormer with ExSPAM token mixers.

The network follows the authors' classification model (``image_classification/models/
spanetv2.py`` of DoranLyong/SPANetV2-official), whose published ImageNet weights load into
this class under the same parameter names; see :class:`SPANetV2`.
"""

import functools
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from torch import Tensor, nn

from .attention import Attention, MixAttention
from .base import SpectralBackbone, StateDict, res_scale_or_identity
from .exspam import ExSPAM
from .linear import pointwise_linear

MIXERS = ('spectral', 'mix_attention', 'attention')

CLASSIFIER_REASON = 'ImageNet classifier (norm, head), which a dense backbone does not use'
HEAD_REASON = 'classification head (SPANetV2ClsHead loads it as head.*)'


def layer_norm_without_bias(embed_dims: int) -> nn.LayerNorm:
    """The LayerNorm of the release's blocks, stem, down-sampling and dense outputs: over
    the last (channel) dim, weight only, eps 1e-6."""
    return nn.LayerNorm(embed_dims, eps=1e-6, bias=False)


class StarReLU(nn.Module):
    """``scale * relu(x) ** 2 + bias`` with two learnable scalars.

    Args:
        scale (float): Initial scale. Defaults to 1.
        bias (float): Initial bias. Defaults to 0.
    """

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), scale))
        self.bias = nn.Parameter(torch.full((1,), bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * torch.square(F.relu(x)) + self.bias


class Mlp(nn.Module):
    """``fc2(StarReLU(fc1(x)))`` on the last dim, without biases.

    StarReLU's affine part is applied through ``fc2`` instead of on the hidden tensor
    (``fc2(s r + b) = s fc2(r) + b fc2(1)``): the same function, two fewer passes over the
    widest tensor of the block.

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Hidden channels.
    """

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims, bias=False)
        self.act = StarReLU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        hidden = pointwise_linear(x, self.fc1.weight)
        if hidden.requires_grad:
            hidden = torch.square(F.relu(hidden))
        else:  # in place outside autograd: no second (widest) buffer
            hidden = hidden.relu_().square_()
        weight = self.fc2.weight
        return pointwise_linear(hidden, weight * self.act.scale, self.act.bias * weight.sum(1))


class SPANetV2Block(nn.Module):
    """``x = rs1(x) + DropPath(mixer(LN(x)))``, then ``x = rs2(x) + DropPath(MLP(LN(x)))``
    on ``(B, H, W, C)`` tensors.

    Args:
        embed_dims (int): Number of channels.
        token_mixer (nn.Module): The token mixer (:class:`ExSPAM`, :class:`Attention` or
            :class:`MixAttention`).
        mlp_ratio (float): Hidden width of the MLP relative to ``embed_dims``.
            Defaults to 4.
        drop_path (float): Stochastic depth rate of this block. Defaults to 0.
        res_scale (bool): Whether to scale both residual paths with a learnable
            per-channel ResScale. Defaults to False.
    """

    def __init__(
        self,
        embed_dims: int,
        token_mixer: nn.Module,
        mlp_ratio: float = 4,
        drop_path: float = 0.0,
        res_scale: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = layer_norm_without_bias(embed_dims)
        self.token_mixer = token_mixer
        self.res_scale1 = res_scale_or_identity(res_scale, embed_dims, channel_dim=-1)
        self.norm2 = layer_norm_without_bias(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio))
        self.res_scale2 = res_scale_or_identity(res_scale, embed_dims, channel_dim=-1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.res_scale1(x) + self.drop_path(self.token_mixer(self.norm1(x)))
        x = self.res_scale2(x) + self.drop_path(self.mlp(self.norm2(x)))
        return x


class Downsampling(nn.Module):
    """The stem (``post_norm`` after a 7x7 stride-4 conv, NCHW image in) or a down-sampling
    layer (``pre_norm`` before a 3x3 stride-2 conv, NHWC in); NHWC out.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stem (bool): Build the stem rather than a down-sampling layer.
    """

    def __init__(self, in_channels: int, out_channels: int, stem: bool) -> None:
        super().__init__()
        self.stem = stem
        if stem:
            self.conv = nn.Conv2d(in_channels, out_channels, 7, stride=4, padding=2)
            self.post_norm = layer_norm_without_bias(out_channels)
        else:
            self.pre_norm = layer_norm_without_bias(in_channels)
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.stem:
            return self.post_norm(self.conv(x).permute(0, 2, 3, 1))
        # The NCHW view of NHWC data is channels-last, which the conv keeps, so the result's
        # NHWC view is contiguous again.
        return self.conv(self.pre_norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class _InstanceAwareClassMethod:
    """A classmethod that, called on an instance, also passes that instance's
    ``gap_before_final_norm`` (which decides what the release's classifier ``norm`` is)."""

    def __init__(self, func: Callable) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    def __get__(self, obj, owner):
        if obj is None:
            return functools.partial(self.func, owner)
        return functools.partial(
            self.func, type(obj), gap_before_final_norm=obj.gap_before_final_norm
        )


@MODELS.register_module()
class SPANetV2(SpectralBackbone):
    """SPANetV2 backbone, from `Spectral-Adaptive Modulation Networks for Visual Perception
    <https://arxiv.org/abs/2503.23947>`_ (IEEE TPAMI 2026).

    Registered once in MMEngine's root ``MODELS`` registry, so ``type='SPANetV2'`` builds
    from MMDetection, MMSegmentation and MMPretrain configs alike. Parameter names are the
    authors' (``downsample_layers.{i}``, ``stages.{i}.{j}``), so their ImageNet checkpoints
    load through ``init_cfg=dict(type='Pretrained', checkpoint=...)``; their classifier
    ``norm``/``head`` are dropped for dense use, or the ``norm`` becomes ``norm{last}`` with
    ``gap_before_final_norm=True``.

    Every output stage ``i`` has its own ``norm{i}``: a LayerNorm over channels without bias
    (eps 1e-6), the authors' dense-task norm, and is returned as an NCHW tensor (strides 4,
    8, 16, 32). With ``gap_before_final_norm=True`` each output is instead
    ``norm{i}(mean over H, W)`` of shape ``(N, C)`` with a LayerNorm with bias: the authors'
    classifier ``norm`` (MMPretrain's ConvNeXt convention), so ``SPANetV2(out_indices=(3, ),
    gap_before_final_norm=True)`` + :class:`~spanet_mm.models.heads.SPANetV2ClsHead` is their
    ImageNet classifier.

    Args:
        arch (str | dict): One of :attr:`arch_settings` (``s18_pure``, ``s18_hybrid``,
            ``s36_pure``, ``s36_hybrid``, ``m36_pure``, ``m36_hybrid``, ``b36_pure``,
            ``b36_hybrid``; the timm names ``spanetv2_s18_pure`` etc. also work) or a dict
            with ``embed_dims`` and ``depths`` (one entry per stage) and optionally
            ``mixers`` (per stage: ``'spectral'`` for ExSPAM, ``'mix_attention'`` or
            ``'attention'``), ``res_scale`` (per stage), ``mlp_ratio``,
            ``filter_input_size`` (the training input size the ExSPAM filters are stored for;
            stage ``i`` stores them for ``size // 2 ** (i + 2)``), ``spectral_heads`` and
            ``attention_head_dims``. Defaults to ``'s18_pure'``.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (Sequence[int] | int): Stages whose features are returned.
            Defaults to (0, 1, 2, 3).
        frozen_stages (int): Freeze the stem (0), or the stem and stages ``1..n`` with their
            down-sampling and output norms; -1 freezes nothing. Defaults to -1.
        drop_path_rate (float): Stochastic depth rate, linear over all blocks from 0.
            Defaults to 0.
        with_cp (bool): Gradient checkpointing of each block. Defaults to False.
        gap_before_final_norm (bool): Return ``norm{i}(global average pool)`` (see above).
            Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config; see
            :class:`~spanet_mm.models.base.SpectralBackbone`.
    """

    arch_settings: Dict[str, dict] = {
        f'{size}{depth}_{kind}': dict(
            embed_dims=dims,
            depths=[3, 3, 9, 3] if depth == 18 else [3, 12, 18, 3],
            mixers=['spectral'] * 4
            if kind == 'pure'
            else ['spectral', 'spectral', 'mix_attention', 'attention'],
        )
        for size, depth, dims in (
            ('s', 18, [64, 128, 320, 512]),
            ('s', 36, [64, 128, 320, 512]),
            ('m', 36, [96, 192, 384, 576]),
            ('b', 36, [128, 256, 512, 768]),
        )
        for kind in ('pure', 'hybrid')
    }
    arch_aliases = {f'spanetv2_{name}': name for name in arch_settings}
    arch_defaults = dict(
        mixers=('spectral',) * 4,
        res_scale=(False, False, True, True),
        mlp_ratio=4,
        filter_input_size=224,
        spectral_heads=4,
        attention_head_dims=32,
    )
    per_stage_keys = ('mixers', 'res_scale')
    weights_source = (
        'docs/model_zoo.md, "Pretrained weights": the assets of '
        'https://github.com/DoranLyong/SPANetV2-official/releases (release '
        '"ImageNet-1K")'
    )

    def __init__(
        self,
        arch: Union[str, dict] = 's18_pure',
        in_channels: int = 3,
        out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        gap_before_final_norm: bool = False,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(
            arch, in_channels, out_indices, frozen_stages, drop_path_rate, with_cp, init_cfg
        )
        self.gap_before_final_norm = gap_before_final_norm
        dims = self.embed_dims
        self.downsample_layers = nn.ModuleList(
            Downsampling(in_channels if i == 0 else dims[i - 1], dims[i], stem=i == 0)
            for i in range(self.num_stages)
        )
        self.stages = nn.ModuleList(
            nn.Sequential(
                *[
                    SPANetV2Block(
                        dims[i],
                        self._token_mixer(i),
                        mlp_ratio=self.arch['mlp_ratio'],
                        drop_path=rate,
                        res_scale=self.arch['res_scale'][i],
                    )
                    for rate in rates
                ]
            )
            for i, rates in enumerate(self.block_drop_path_rates())
        )
        for i in self.out_indices:
            norm = (
                nn.LayerNorm(dims[i], eps=1e-6)
                if gap_before_final_norm
                else layer_norm_without_bias(dims[i])
            )
            self.add_module(f'norm{i}', norm)
        self.apply(self._init_layer)
        self._freeze_stages()

    @staticmethod
    def filter_sizes(
        input_size: Union[int, Sequence[int]], num_stages: int
    ) -> List[Tuple[int, int]]:
        """Feature size of each stage for an ``input_size`` image (strides 4, 8, 16, ...),
        as the release computes it (``size // stride``)."""
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        return [(height // 2 ** (i + 2), width // 2 ** (i + 2)) for i in range(num_stages)]

    def _token_mixer(self, index: int) -> nn.Module:
        kind, dims = self.arch['mixers'][index], self.embed_dims[index]
        if kind == 'spectral':
            size = self.filter_sizes(self.arch['filter_input_size'], self.num_stages)[index]
            return ExSPAM(dims, size, num_heads=self.arch['spectral_heads'])
        cls = MixAttention if kind == 'mix_attention' else Attention
        return cls(dims, head_dims=self.arch['attention_head_dims'])

    @staticmethod
    def _init_layer(module: nn.Module) -> None:
        # The release's initialisation: truncated normal (std .02) for every conv and
        # linear weight, zero biases (the ExSPAM filters keep their randn * .02).
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @classmethod
    def _check_arch(cls, arch: dict) -> None:
        name = cls.__name__
        for i, (kind, dims) in enumerate(zip(arch['mixers'], arch['embed_dims'])):
            if kind not in MIXERS:
                raise ValueError(
                    f'{name} mixers must be among {MIXERS}, got {kind!r} for stage {i}'
                )
            heads = arch['spectral_heads'] if kind == 'spectral' else arch['attention_head_dims']
            if not (isinstance(heads, int) and heads > 0 and dims % heads == 0):
                key = 'spectral_heads' if kind == 'spectral' else 'attention_head_dims'
                raise ValueError(
                    f'{name} stage {i} ({kind}) needs embed_dims divisible by '
                    f'{key}={heads!r}, got {dims}'
                )
        sizes = cls.filter_sizes(arch['filter_input_size'], len(arch['depths']))
        small = [
            i
            for i, (kind, size) in enumerate(zip(arch['mixers'], sizes))
            if kind == 'spectral' and min(size) < 1
        ]
        if small:
            raise ValueError(
                f'{name} filter_input_size={arch["filter_input_size"]!r} '
                f'leaves no feature map at spectral stages {small} '
                f'(sizes {sizes})'
            )
        if not (isinstance(arch['mlp_ratio'], (int, float)) and arch['mlp_ratio'] > 0):
            raise ValueError(f'{name} mlp_ratio must be positive, got {arch["mlp_ratio"]!r}')

    # -- forward -----------------------------------------------------------------------------

    def _stage_entry(self, index: int) -> nn.Module:
        return self.downsample_layers[index]

    def _output(self, index: int, x: Tensor) -> Tensor:
        norm = getattr(self, f'norm{index}')
        if self.gap_before_final_norm:
            return norm(x.mean((1, 2)))
        return norm(x).permute(0, 3, 1, 2).contiguous()

    # -- checkpoints -------------------------------------------------------------------------

    @_InstanceAwareClassMethod
    def from_release_layout(
        cls, state_dict: StateDict, gap_before_final_norm: bool = False
    ) -> Tuple[StateDict, Dict[str, List[str]]]:
        """The authors' tensors under this class's names.

        The blocks, stem and down-sampling layers already have the release's names. Their
        classifier's ``norm`` (pooled features) becomes ``norm{last}`` when
        ``gap_before_final_norm`` is set and is dropped otherwise; ``head`` is dropped.
        Called on an instance, ``gap_before_final_norm`` is the instance's.

        Returns:
            tuple: The state_dict and the keys left out, grouped by reason.
        """
        stages = {
            int(m.group(1)) for m in map(re.compile(r'stages\.(\d+)\.').match, state_dict) if m
        }
        last = max(stages) if stages else 3
        renamed: StateDict = OrderedDict()
        dropped: Dict[str, List[str]] = {}
        for key, value in state_dict.items():
            if key.startswith('head.'):
                reason = HEAD_REASON if gap_before_final_norm else CLASSIFIER_REASON
                dropped.setdefault(reason, []).append(key)
            elif key.startswith('norm.'):
                if gap_before_final_norm:
                    renamed[f'norm{last}.' + key[len('norm.') :]] = value
                else:
                    dropped.setdefault(CLASSIFIER_REASON, []).append(key)
            else:
                renamed[key] = value
        return renamed, dropped

    @classmethod
    def holds_layout(cls, state_dict: StateDict) -> bool:
        """Whether the tensors have SPANetV2's stem and down-sampling layers."""
        return any(k.startswith('downsample_layers.') for k in state_dict)

    @classmethod
    def is_release_layout(cls, state_dict: StateDict) -> bool:
        """Whether the keys are the authors' SPANetV2 names (their ImageNet files)."""
        return any(k.startswith('downsample_layers.') for k in state_dict)

    @classmethod
    def release_to_classifier(cls, state_dict: StateDict) -> Tuple[StateDict, List[str]]:
        """An authors' ImageNet file as MMPretrain's ``ImageClassifier`` of this package names
        it: ``backbone.*`` with the classifier norm as ``backbone.norm3`` (the pooled norm of
        ``gap_before_final_norm=True``), ``head.*`` as :class:`SPANetV2ClsHead` names it;
        and the keys dropped (none)."""
        renamed, left_out = cls.from_release_layout(state_dict, gap_before_final_norm=True)
        out = OrderedDict(('backbone.' + key, value) for key, value in renamed.items())
        out.update((key, value) for key, value in state_dict.items() if key.startswith('head.'))
        dropped = [key for keys in left_out.values() for key in keys if not key.startswith('head.')]
        return out, dropped

    @classmethod
    def arch_name_of(cls, state_dict: StateDict) -> Optional[str]:
        """The name in :attr:`arch_settings` whose blocks, stem and down-sampling layers
        the tensors have (their widths, depths and mixers), or None."""
        dims, depths, mixer_keys = {}, {}, {}
        for key, value in state_dict.items():
            match = re.match(r'downsample_layers\.(\d+)\.conv\.weight$', key)
            if match:
                dims[int(match.group(1))] = value.shape[0]
            match = re.match(r'stages\.(\d+)\.(\d+)\.token_mixer\.(.+)$', key)
            if match:
                stage, block = int(match.group(1)), int(match.group(2))
                depths[stage] = max(depths.get(stage, 0), block + 1)
                mixer_keys.setdefault(stage, set()).add(match.group(3))
        mixers = {}
        for stage, keys in mixer_keys.items():
            mixers[stage] = (
                'spectral'
                if 'filter_1' in keys
                else 'mix_attention'
                if 'local_conv.weight' in keys
                else 'attention'
                if 'qkv.weight' in keys
                else None
            )
        if not dims or sorted(dims) != list(range(len(dims))):
            return None
        found = dict(
            embed_dims=[dims[i] for i in sorted(dims)],
            depths=[depths.get(i, 0) for i in sorted(dims)],
            mixers=[mixers.get(i) for i in sorted(dims)],
        )
        for name, arch in cls.arch_settings.items():
            if all(list(arch[key]) == found[key] for key in found):
                return name
        return None


def _build_cls_head(**kwargs) -> nn.Module:
    """Build :class:`~spanet_mm.models.heads.SPANetV2ClsHead`; registered under that name so
    configs can use it after ``import spanet_mm`` while MMPretrain, which the head subclasses,
    is imported only when a head is actually built."""
    # The head subclasses MMPretrain's ClsHead: MMPretrain is imported with it, on first use.
    from .heads import SPANetV2ClsHead

    return SPANetV2ClsHead(**kwargs)


MODELS.register_module(name='SPANetV2ClsHead', module=_build_cls_head)
