"""SPANet backbone: a MetaFormer whose token mixer is SPAM (Section 4.3 of the paper)."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from torch import Tensor, nn

from .spam import SPAM

# Optional keys of an arch dict and their values for the paper's models.
DEFAULT_ARCH_OPTIONS = dict(
    radii=(2, 2, 1, 1),
    balances=(0.7, 0.8, 0.9),
    kernel_size=7,
    mlp_ratio=4,
    res_scale=(False, False, True, True),
)


class ResScale(nn.Module):
    """Learnable per-channel scale of the residual branch's input (ResScale)."""

    def __init__(self, embed_dims: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((embed_dims, ), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale[:, None, None]


class ConvMlp(nn.Module):
    """1x1 conv, GELU, 1x1 conv (the MetaFormer channel MLP on NCHW tensors)."""

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(embed_dims, hidden_dims, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, 1)
        # The release initialises these two (and only these) this way.
        for fc in (self.fc1, self.fc2):
            trunc_normal_(fc.weight, std=.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.fc1(x)
        if not hidden.is_contiguous():
            # On channels-last data torch's CPU GELU takes a slow path (about 1.6x the time
            # at 256x56x56); on the NHWC view, which is contiguous, it takes the fast one.
            return self.fc2(self.act(hidden.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return self.fc2(self.act(hidden))


class SPANetBlock(nn.Module):
    """``x = rs1(x) + DropPath(SPAM(GN(x)))``, then ``x = rs2(x) + DropPath(MLP(GN(x)))``.

    Args:
        embed_dims (int): Number of channels.
        radius (float): SPF radius of this stage.
        balances (Sequence[float]): SPF balances of the SPAM gates.
        kernel_size (int): Depth-wise kernel size of SPAM.
        mlp_ratio (float): Hidden width of the MLP relative to ``embed_dims``.
        drop_path (float): Stochastic depth rate of this block.
        res_scale (bool): Whether to use ResScale on both residual paths.
    """

    def __init__(self,
                 embed_dims: int,
                 radius: float,
                 balances: Sequence[float],
                 kernel_size: int = 7,
                 mlp_ratio: float = 4,
                 drop_path: float = 0.,
                 res_scale: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, embed_dims)
        self.token_mixer = SPAM(embed_dims, radius, balances, kernel_size)
        self.norm2 = nn.GroupNorm(1, embed_dims)
        self.mlp = ConvMlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.res_scale1 = ResScale(embed_dims) if res_scale else nn.Identity()
        self.res_scale2 = ResScale(embed_dims) if res_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.res_scale1(x) + self.drop_path(self.token_mixer(self.norm1(x)))
        x = self.res_scale2(x) + self.drop_path(self.mlp(self.norm2(x)))
        return x


@MODELS.register_module()
class SPANet(BaseModule):
    """SPANet backbone, from `SPANet: Frequency-balancing Token Mixer using Spectral
    Pooling Aggregation Modulation <https://arxiv.org/abs/2308.11568>`_ (ICCV 2023).

    Registered once in MMEngine's root ``MODELS`` registry, so ``type='SPANet'`` builds from
    MMDetection, MMSegmentation and MMPretrain configs alike.

    Args:
        arch (str | dict): One of :attr:`arch_settings` (``'s'``, ``'m'``, ``'mx'``, ``'b'``,
            ``'bx'``; ``'small'``, ``'medium'``, ``'base'`` also work) or a dict with
            ``embed_dims`` and ``depths`` (one entry per stage) and optionally ``radii``
            (per stage), ``balances`` (the SPF balances), ``kernel_size``, ``mlp_ratio`` and
            ``res_scale`` (per stage, whether to use ResScale). Defaults to ``'s'``.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (Sequence[int] | int): Stages whose features are returned (0-based,
            negative counts from the end). Each goes through its own GroupNorm.
            Defaults to (0, 1, 2, 3).
        frozen_stages (int): Freeze the stem (0), or the stem and stages ``1..n``, with their
            down-sampling and output norms; -1 freezes nothing. Defaults to -1.
        drop_path_rate (float): Stochastic depth rate, growing linearly over all blocks
            from 0 to this value. Defaults to 0.
        with_cp (bool): Recompute each block in the backward pass (gradient checkpointing)
            to save memory. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config. With
            ``dict(type='Pretrained', checkpoint=PATH)`` the file may be in the authors'
            release layout, this class's layout, or a downstream (``backbone.``) layout;
            see :func:`spanet_mm.checkpoint.load_pretrained`.
    """
    arch_settings: Dict[str, dict] = {
        's': dict(embed_dims=[64, 128, 320, 512], depths=[4, 4, 12, 4]),
        'm': dict(embed_dims=[64, 128, 320, 512], depths=[6, 6, 18, 6]),
        'mx': dict(embed_dims=[64, 128, 320, 512], depths=[8, 8, 24, 8]),
        'b': dict(embed_dims=[96, 192, 384, 768], depths=[6, 6, 18, 6]),
        'bx': dict(embed_dims=[96, 192, 384, 768], depths=[8, 8, 24, 8]),
    }
    arch_aliases = {'small': 's', 'medium': 'm', 'medium_x': 'mx', 'base': 'b',
                    'base_x': 'bx'}
    # Speed settings only (the outputs are the same): on CPU, stages whose feature maps
    # have at least `channels_last_min_area` positions run on channels-last data, where
    # oneDNN's convolutions, GroupNorm and the filter are faster; smaller maps (e.g. stages
    # 2-4 at 224x224) run faster in the plain layout (tools/analysis/benchmark.py).
    channels_last: bool = True
    channels_last_min_area: int = 1024

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch = self.resolve_arch(arch)
        self.embed_dims = list(self.arch['embed_dims'])
        self.depths = list(self.arch['depths'])
        self.num_stages = len(self.depths)
        self.in_channels = in_channels
        self.out_indices = self._check_out_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

        self.stem = nn.Conv2d(in_channels, self.embed_dims[0], 7, stride=4, padding=2)
        self.downsamples = nn.ModuleList(
            nn.Conv2d(self.embed_dims[i], self.embed_dims[i + 1], 3, stride=2, padding=1)
            for i in range(self.num_stages - 1))
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            first = sum(self.depths[:i])
            self.stages.append(nn.Sequential(*[
                SPANetBlock(
                    self.embed_dims[i],
                    radius=self.arch['radii'][i],
                    balances=self.arch['balances'],
                    kernel_size=self.arch['kernel_size'],
                    mlp_ratio=self.arch['mlp_ratio'],
                    drop_path=rates[first + j],
                    res_scale=self.arch['res_scale'][i]) for j in range(depth)
            ]))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.GroupNorm(1, self.embed_dims[i]))
        self._freeze_stages()

    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> dict:
        """Turn an arch name or dict into a complete, validated arch dict."""
        if isinstance(arch, str):
            name = cls.arch_aliases.get(arch.lower(), arch.lower())
            if name not in cls.arch_settings:
                valid = sorted(cls.arch_settings) + sorted(cls.arch_aliases)
                raise ValueError(f'Unknown SPANet arch {arch!r}; valid names are '
                                 f'{", ".join(valid)}, or a dict with embed_dims and '
                                 'depths')
            arch = cls.arch_settings[name]
        if not isinstance(arch, dict):
            raise TypeError(f'SPANet arch must be a str or a dict, got {type(arch).__name__}')
        missing = {'embed_dims', 'depths'} - set(arch)
        if missing:
            raise ValueError(f'A custom SPANet arch needs the keys embed_dims and depths; '
                             f'{sorted(missing)} missing from {arch}')
        unknown = set(arch) - {'embed_dims', 'depths'} - set(DEFAULT_ARCH_OPTIONS)
        if unknown:
            raise ValueError(f'Unknown SPANet arch keys {sorted(unknown)}; known keys are '
                             f'embed_dims, depths, {", ".join(DEFAULT_ARCH_OPTIONS)}')
        full = copy.deepcopy(DEFAULT_ARCH_OPTIONS)
        full.update(copy.deepcopy(arch))
        num_stages = len(full['depths'])
        for key in ('embed_dims', 'radii', 'res_scale'):
            if len(full[key]) != num_stages:
                raise ValueError(
                    f'SPANet arch lists must have one entry per stage: depths has '
                    f'{num_stages} ({list(full["depths"])}) but {key} has '
                    f'{len(full[key])} ({list(full[key])})')
        if num_stages == 0 or min(full['depths']) < 1:
            raise ValueError(f'SPANet depths must be positive, got {list(full["depths"])}')
        if not full['balances']:
            raise ValueError('SPANet needs at least one SPF balance')
        return full

    def _check_out_indices(self, out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise ValueError(f'out_indices must be an int or a non-empty sequence of ints, '
                             f'got {out_indices!r}')
        resolved = []
        for index in out_indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(
                    f'out_indices must be in [{-self.num_stages}, {self.num_stages - 1}] '
                    f'for {self.num_stages} stages, got {index} in {tuple(out_indices)}')
            resolved.append(index % self.num_stages)
        return tuple(sorted(set(resolved)))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SPANet expects input of shape (N, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        outs = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = x.contiguous(memory_format=self._memory_format(x))
            x = self._run_stage(stage, x)
            if i in self.out_indices:
                # Features are handed back plainly contiguous, whatever the stage ran on.
                outs.append(getattr(self, f'norm{i}')(x).contiguous())
        return tuple(outs)

    def _memory_format(self, x: Tensor) -> torch.memory_format:
        if (self.channels_last and x.device.type == 'cpu'
                and x.shape[-2] * x.shape[-1] >= self.channels_last_min_area):
            return torch.channels_last
        return torch.contiguous_format

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        norm = stage[0].norm1
        if (torch.is_grad_enabled() and not x.requires_grad and x.device.type == 'cpu'
                and not x.is_contiguous() and norm.weight.requires_grad):
            # torch 2.13's CPU GroupNorm backward crashes (segfault) on channels-last input
            # that needs no gradient when its weight does (the first stage after frozen
            # ones): let autograd track this input too.
            x = x.detach().requires_grad_()
        # Checkpoint whenever autograd records, even if x itself needs no gradient (the
        # input of the first trainable stage after frozen ones): the blocks' weights do.
        if not (self.with_cp and torch.is_grad_enabled()):
            return stage(x)
        for block in stage:
            x = cp.checkpoint(block, x, use_reentrant=False)
        return x

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules = [self.stem]
        for i in range(self.frozen_stages):
            if i > 0:
                modules.append(self.downsamples[i - 1])
            modules.append(self.stages[i])
            if i in self.out_indices:
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'SPANet':
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self) -> None:
        init_cfg = self.init_cfg
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            from ..checkpoint import load_pretrained
            load_pretrained(self, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'))
            self._is_init = True
        else:
            super().init_weights()
