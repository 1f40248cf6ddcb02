"""SPANet backbone: a MetaFormer whose token mixer is SPAM (Section 4.3 of the paper).

Also the authors' checkpoint layout of this generation. Their ImageNet weights (timm
training) name things ``patch_embed.proj``, ``network.{0,2,4,6}.{j}`` (stages),
``network.{1,3,5}.proj`` (down-sampling), ``norm``/``head`` (classifier) and
``norm{0,2,4,6}`` (their detection models), and store each filter's fixed mask as
``sps.{i}.filter``; :func:`release_to_spanet_mm` renames them, dropping the masks, which are
rebuilt here for every feature size.
"""

import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from mmengine.utils import digit_version
from torch import Tensor, nn

from ..checkpoint import stage_layout
from .base import SpectralBackbone, StateDict, res_scale_or_identity
from .norm import OneGroupNorm
from .spam import (
    SPAM,
    branch_input,
    forward_on_nhwc,
    fused_inference,
    is_channels_last,
    is_observed,
    pointwise,
)

# torch's CPU GroupNorm backward gained a channels-last kernel in 2.1 (pytorch PR 89485); on
# 2.13.0 it crashes (segfault) for channels-last input that needs no gradient while the
# weight does. Versions from 2.1 on get the work-around in SPANet._enter_stage.
_GROUP_NORM_CHANNELS_LAST_BACKWARD_BUG = digit_version(torch.__version__) >= digit_version('2.1.0')

MASK_REASON = 'fixed SPF masks (rebuilt here for each input size)'
# Block-internal names that differ between the authors' files and this package.
_RELEASE_BLOCK_RENAMES = (
    ('token_mixer.conv.', 'token_mixer.dwconv.'),
    ('token_mixer.pws.', 'token_mixer.context_convs.'),
)


def release_num_stages(state_dict: StateDict) -> int:
    """Number of stages of a release state_dict (stages are ``network.{0,2,4,6}``)."""
    indices = [int(m[1]) for k in state_dict if (m := re.match(r'network\.(\d+)\.', k))]
    return max(indices) // 2 + 1 if indices else 4


def release_to_spanet_mm(state_dict: StateDict) -> Tuple[StateDict, List[str]]:
    """Rename the authors' SPANet keys to this package's.

    Returns:
        tuple: The renamed state_dict (the classifier's ``norm`` becomes the last stage's
        ``norm{i}``, their ``head`` stays ``head``), and the keys dropped (the fixed masks).
    """
    num_stages = release_num_stages(state_dict)
    renamed, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        new = _rename_release_key(key, num_stages)
        if new is None:
            dropped.append(key)
        else:
            renamed[new] = value
    return renamed, dropped


def _rename_release_key(key: str, num_stages: int) -> Optional[str]:
    if re.search(r'\.sps\.\d+\.filter$', key):
        return None
    if key.startswith('patch_embed.proj.'):
        return 'stem.' + key[len('patch_embed.proj.') :]
    match = re.match(r'network\.(\d+)\.(.*)', key)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        if index % 2 == 1:
            return f'downsamples.{index // 2}.' + re.sub(r'^proj\.', '', rest)
        for old, new in _RELEASE_BLOCK_RENAMES:
            rest = rest.replace(old, new)
        return f'stages.{index // 2}.{rest}'
    match = re.match(r'norm(\d+)\.(.*)', key)
    if match:
        return f'norm{int(match.group(1)) // 2}.{match.group(2)}'
    if key.startswith('norm.'):
        return f'norm{num_stages - 1}.' + key[len('norm.') :]
    return key


class ConvMlp(nn.Module):
    """1x1 conv, GELU, 1x1 conv (the MetaFormer channel MLP on NCHW tensors).

    On channels-last CPU data the 1x1 convs run as matrix products on the NHWC view, without
    autograd as oneDNN's linear kernel with the GELU fused into the first (see
    :func:`~spanet_mm.models.spam.pointwise`).
    """

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(embed_dims, hidden_dims, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, 1)
        # The release initialises these two (and only these) this way.
        for fc in (self.fc1, self.fc2):
            trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != 'cpu' or not is_channels_last(x):
            return self.fc2(self.act(self.fc1(x)))
        return forward_on_nhwc(self.forward_nhwc, x)

    def forward_nhwc(
        self,
        x: Tensor,
        fused: bool,
        residual: Optional[Tensor] = None,
        residual_scale: Optional[Tensor] = None,
    ) -> Tensor:
        """The MLP of NHWC data (contiguous), plus ``residual * residual_scale`` if given
        (as :meth:`SPAM.forward_nhwc <spanet_mm.models.spam.SPAM.forward_nhwc>`)."""
        # On NHWC data (contiguous) torch's CPU GELU also takes its fast path; on
        # channels-last NCHW tensors it takes a slow one (about 1.6x the time at 256x56x56).
        hidden = pointwise(self.fc1, x, fused, 'gelu')
        return pointwise(self.fc2, hidden, fused, residual=residual, residual_scale=residual_scale)


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

    def __init__(
        self,
        embed_dims: int,
        radius: float,
        balances: Sequence[float],
        kernel_size: int = 7,
        mlp_ratio: float = 4,
        drop_path: float = 0.0,
        res_scale: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = OneGroupNorm(embed_dims)
        self.token_mixer = SPAM(embed_dims, radius, balances, kernel_size)
        self.norm2 = OneGroupNorm(embed_dims)
        self.mlp = ConvMlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.res_scale1 = res_scale_or_identity(res_scale, embed_dims)
        self.res_scale2 = res_scale_or_identity(res_scale, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == 'cpu' and is_channels_last(x) and self._residuals_fusable():
            return self._forward_nhwc(x)
        x = self.res_scale1(x) + self.drop_path(self.token_mixer(self.norm1(x)))
        x = self.res_scale2(x) + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def _residuals_fusable(self) -> bool:
        """Whether the residual sums may be folded into the branches' last layers: no
        stochastic depth to apply to the branch alone, and no hooks watching the modules
        that :meth:`_forward_nhwc` does not call as modules (analysis tools)."""
        if self.training and not isinstance(self.drop_path, nn.Identity):
            return False
        return not any(
            is_observed(module)
            for module in (
                self.token_mixer,
                self.mlp,
                self.res_scale1,
                self.res_scale2,
                self.drop_path,
            )
        )

    def _forward_nhwc(self, x: Tensor) -> Tensor:
        """:meth:`forward` of channels-last CPU data: the branches run on the NHWC view and
        each residual sum comes out of the branch's last point-wise layer (inside oneDNN's
        kernel where the dtypes allow), with ResScale applied in the same step: a pass over
        the data and a few tensor operations fewer per block. The same function."""
        fused = fused_inference(x)
        stream = x.permute(0, 2, 3, 1)  # the contiguous NHWC view of the residual stream
        for norm, branch, res_scale in (
            (self.norm1, self.token_mixer, self.res_scale1),
            (self.norm2, self.mlp, self.res_scale2),
        ):
            normed = norm(stream.permute(0, 3, 1, 2))  # channels-last, like its input
            normed = branch_input(normed, fused)
            stream = branch.forward_nhwc(
                normed, fused, residual=stream, residual_scale=getattr(res_scale, 'scale', None)
            )
        return stream.permute(0, 3, 1, 2)


@MODELS.register_module()
class SPANet(SpectralBackbone):
    """SPANet backbone, from `SPANet: Frequency-balancing Token Mixer using Spectral
    Pooling Aggregation Modulation <https://arxiv.org/abs/2308.11568>`_ (ICCV 2023).

    Registered once in MMEngine's root ``MODELS`` registry, so ``type='SPANet'`` builds from
    MMDetection, MMSegmentation and MMPretrain configs alike. Each output goes through its own
    GroupNorm (one group).

    Args:
        arch (str | dict): One of :attr:`arch_settings` (``'s'``, ``'m'``, ``'mx'``, ``'b'``,
            ``'bx'``; ``'small'``, ``'medium'``, ``'base'`` also work) or a dict with
            ``embed_dims`` and ``depths`` (one entry per stage) and optionally ``radii``
            (per stage), ``balances`` (the SPF balances, each in (0, 1)), ``kernel_size``,
            ``mlp_ratio`` and ``res_scale`` (per stage, whether to use ResScale).
            Defaults to ``'s'``.
        channels_last (bool): Speed setting only (the outputs are the same): on CPU, run
            the stages on channels-last data, where the point-wise layers are matrix
            products on the NHWC view (oneDNN's fused linear kernels without autograd),
            the filter runs on that view in the working dtype, and GroupNorm and the
            depth-wise convs have channels-last kernels. Defaults to True.
        channels_last_min_area (int): With ``channels_last``, stages whose feature maps have
            fewer positions run in the plain layout instead. Defaults to 0 (all stages
            channels-last: no size threshold to tune per machine).
        **kwargs: ``in_channels``, ``out_indices``, ``frozen_stages``, ``drop_path_rate``,
            ``with_cp`` and ``init_cfg``, as :class:`~spanet_mm.models.base.SpectralBackbone`
            describes them.
    """

    arch_settings: Dict[str, dict] = {
        's': dict(embed_dims=[64, 128, 320, 512], depths=[4, 4, 12, 4]),
        'm': dict(embed_dims=[64, 128, 320, 512], depths=[6, 6, 18, 6]),
        'mx': dict(embed_dims=[64, 128, 320, 512], depths=[8, 8, 24, 8]),
        'b': dict(embed_dims=[96, 192, 384, 768], depths=[6, 6, 18, 6]),
        'bx': dict(embed_dims=[96, 192, 384, 768], depths=[8, 8, 24, 8]),
    }
    arch_aliases = {'small': 's', 'medium': 'm', 'medium_x': 'mx', 'base': 'b', 'base_x': 'bx'}
    arch_defaults = dict(
        radii=(2, 2, 1, 1),
        balances=(0.7, 0.8, 0.9),
        kernel_size=7,
        mlp_ratio=4,
        res_scale=(False, False, True, True),
    )
    per_stage_keys = ('radii', 'res_scale')
    weights_source = (
        'docs/model_zoo.md, "Pretrained weights": the assets of '
        'https://github.com/DoranLyong/SPANet-official/releases (release '
        '"ImageNet-pretrained")'
    )

    def __init__(
        self,
        arch: Union[str, dict] = 's',
        in_channels: int = 3,
        out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        channels_last: bool = True,
        channels_last_min_area: int = 0,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(
            arch, in_channels, out_indices, frozen_stages, drop_path_rate, with_cp, init_cfg
        )
        if not isinstance(channels_last, bool):
            raise ValueError(f'SPANet: channels_last must be a bool, got {channels_last!r}')
        if not (isinstance(channels_last_min_area, int) and channels_last_min_area >= 0):
            raise ValueError(
                f'SPANet: channels_last_min_area must be an int >= 0, got '
                f'{channels_last_min_area!r}'
            )
        self.channels_last = channels_last
        self.channels_last_min_area = channels_last_min_area

        self.stem = nn.Conv2d(in_channels, self.embed_dims[0], 7, stride=4, padding=2)
        self.downsamples = nn.ModuleList(
            nn.Conv2d(self.embed_dims[i], self.embed_dims[i + 1], 3, stride=2, padding=1)
            for i in range(self.num_stages - 1)
        )
        self.stages = nn.ModuleList(
            nn.Sequential(
                *[
                    SPANetBlock(
                        self.embed_dims[i],
                        radius=self.arch['radii'][i],
                        balances=self.arch['balances'],
                        kernel_size=self.arch['kernel_size'],
                        mlp_ratio=self.arch['mlp_ratio'],
                        drop_path=rate,
                        res_scale=self.arch['res_scale'][i],
                    )
                    for rate in stage_rates
                ]
            )
            for i, stage_rates in enumerate(self.block_drop_path_rates())
        )
        for i in self.out_indices:
            self.add_module(f'norm{i}', OneGroupNorm(self.embed_dims[i]))
        self._freeze_stages()

    @classmethod
    def _check_arch(cls, arch: dict) -> None:
        balances = arch['balances']
        if not balances or not all(isinstance(b, (int, float)) and 0 < b < 1 for b in balances):
            raise ValueError(
                f'SPANet balances must be a non-empty list of numbers in (0, 1), got {balances!r}'
            )
        if any(not isinstance(r, (int, float)) or r < 0 for r in arch['radii']):
            raise ValueError(f'SPANet radii must be >= 0, got {list(arch["radii"])}')
        kernel = arch['kernel_size']
        if not (isinstance(kernel, int) and kernel > 0 and kernel % 2 == 1):
            raise ValueError(f'SPANet kernel_size must be a positive odd int, got {kernel!r}')
        if not (isinstance(arch['mlp_ratio'], (int, float)) and arch['mlp_ratio'] > 0):
            raise ValueError(f'SPANet mlp_ratio must be positive, got {arch["mlp_ratio"]!r}')

    def _stage_entry(self, index: int) -> nn.Module:
        return self.stem if index == 0 else self.downsamples[index - 1]

    def _enter_stage(self, index: int, x: Tensor) -> Tensor:
        if index == 0:
            # The image in the first stage's layout (3 channels: a cheap copy), so that the
            # stem's output comes out in it rather than being copied into it; the check
            # below has the last word.
            rows, cols = (size // stride for size, stride in zip(x.shape[-2:], self.stem.stride))
            x = x.contiguous(memory_format=self._memory_format(x.device, rows, cols))
        x = self._stage_entry(index)(x)
        x = x.contiguous(memory_format=self._memory_format(x.device, *x.shape[-2:]))
        if (
            _GROUP_NORM_CHANNELS_LAST_BACKWARD_BUG
            and torch.is_grad_enabled()
            and not x.requires_grad
            and x.device.type == 'cpu'
            and not x.is_contiguous()
            and self.stages[index][0].norm1.weight.requires_grad
        ):
            # The first trainable stage after frozen ones (see the note at the top): let
            # autograd track its input too.
            x = x.detach().requires_grad_()
        return x

    def _output(self, index: int, x: Tensor) -> Tensor:
        # Features are handed back plainly contiguous, whatever the stage ran on.
        return getattr(self, f'norm{index}')(x).contiguous()

    def _memory_format(self, device: torch.device, height: int, width: int) -> torch.memory_format:
        if (
            self.channels_last
            and device.type == 'cpu'
            and height * width >= self.channels_last_min_area
        ):
            return torch.channels_last
        return torch.contiguous_format

    @classmethod
    def from_release_layout(cls, state_dict: StateDict) -> Tuple[StateDict, Dict[str, List[str]]]:
        """The authors' tensors (``patch_embed``, ``network.*``) under this class's names
        (:func:`release_to_spanet_mm`), and the keys left out grouped by reason: the fixed
        masks. A dict in this class's layout comes back unchanged."""
        if not cls.is_release_layout(state_dict):
            return state_dict, {}
        renamed, masks = release_to_spanet_mm(state_dict)
        return renamed, ({MASK_REASON: masks} if masks else {})

    @classmethod
    def holds_layout(cls, state_dict: StateDict) -> bool:
        """Whether the tensors have SPAM mixers: a SPANet (v1) state_dict."""
        return any(k.endswith('.token_mixer.proj_in.weight') for k in state_dict)

    @classmethod
    def is_release_layout(cls, state_dict: StateDict) -> bool:
        """Whether the keys are the authors' SPANet names (their ImageNet files)."""
        return any(k.startswith(('network.', 'patch_embed.')) for k in state_dict)

    @classmethod
    def release_to_classifier(cls, state_dict: StateDict) -> Tuple[StateDict, List[str]]:
        """An authors' ImageNet file as MMPretrain's ``ImageClassifier`` of this package names
        it (``backbone.*``, the final norm as ``backbone.norm3``, ``head.fc.*`` of a
        ``LinearClsHead``), and the keys dropped (the fixed masks)."""
        renamed, dropped = release_to_spanet_mm(state_dict)
        out = OrderedDict(
            (
                ('head.fc.' + key[len('head.') :])
                if key.startswith('head.')
                else 'backbone.' + key,
                value,
            )
            for key, value in renamed.items()
        )
        return out, dropped

    @classmethod
    def arch_name_of(cls, state_dict: StateDict) -> Optional[str]:
        """The arch of :attr:`arch_settings` whose depths and widths the tensors (in this
        class's layout) have, or None (also for tensors of another backbone family)."""
        if not cls.holds_layout(state_dict):
            return None
        depths, widths = stage_layout(state_dict)
        for name, arch in cls.arch_settings.items():
            if list(arch['depths']) == depths and list(arch['embed_dims']) == widths:
                return name
        return None
