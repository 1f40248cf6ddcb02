"""What the SPANet generations share: arch tables, stage handling, freezing, pretrained loading.

:class:`SpectralBackbone` is the base of :class:`~spanet_mm.SPANet` (ICCV 2023) and
:class:`~spanet_mm.SPANetV2` (TPAMI 2026). Both are MetaFormers with four stages at strides
4, 8, 16 and 32: a module leads into each stage (the stem, then the down-sampling layers), the
stage is a sequence of blocks, and each output stage has its own norm ``norm{i}``. The base
class owns everything that follows from that layout alone:

- resolving an arch name or a custom arch dict into a complete, validated arch;
- the stochastic-depth schedule (linear over all blocks of the network);
- ``out_indices``, ``frozen_stages`` and gradient checkpointing (``with_cp``);
- loading pretrained weights through ``init_cfg=dict(type='Pretrained', ...)``.

A subclass builds its layers and says how data enters a stage and leaves as an output.
"""

import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..checkpoint import load_pretrained

StateDict = Dict[str, Tensor]


class ResScale(nn.Module):
    """Learnable per-channel scale of a residual branch's input (ResScale).

    Args:
        embed_dims (int): Number of channels.
        channel_dim (int): Dimension of the channels: 1 for NCHW data, -1 for NHWC.
        init_value (float): Initial value of the scale. Defaults to 1.
    """

    def __init__(self, embed_dims: int, channel_dim: int = 1, init_value: float = 1.0) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.scale = nn.Parameter(torch.full((embed_dims,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        if self.channel_dim == -1:
            return x * self.scale
        return x * self.scale[:, None, None]


def res_scale_or_identity(enabled: bool, embed_dims: int, channel_dim: int = 1) -> nn.Module:
    """A :class:`ResScale` where the arch asks for one, else the identity."""
    return ResScale(embed_dims, channel_dim) if enabled else nn.Identity()


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class SpectralBackbone(BaseModule):
    """Base class of the SPANet backbones (see the module docstring).

    Subclasses set :attr:`arch_settings`, :attr:`arch_aliases`, :attr:`arch_defaults` and
    :attr:`per_stage_keys`, build ``self.stages`` (an ``nn.ModuleList`` of
    ``nn.Sequential`` of blocks) and one norm ``norm{i}`` per output stage, and implement
    :meth:`_stage_entry`, :meth:`_enter_stage` and :meth:`_output`.

    Args:
        arch (str | dict): A name of :attr:`arch_settings` (or an alias), or a dict with
            ``embed_dims`` and ``depths`` (one entry per stage) and optionally the keys of
            :attr:`arch_defaults`.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (Sequence[int] | int): Stages whose features are returned (0-based,
            negative counts from the end). Defaults to (0, 1, 2, 3).
        frozen_stages (int): Freeze the stem (0), or the stem and stages ``1..n`` with their
            down-sampling and output norms; -1 freezes nothing. Defaults to -1.
        drop_path_rate (float): Stochastic depth rate in [0, 1), growing linearly over all
            blocks from 0 to this value. Defaults to 0.
        with_cp (bool): Recompute each block in the backward pass (gradient checkpointing)
            to save memory. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config. With
            ``dict(type='Pretrained', checkpoint=PATH)`` the file may be in the authors'
            layout, this class's layout, or a downstream (``backbone.``) layout; add
            ``allow_partial=True`` to accept a file that covers only part of the backbone.
            ``checkpoint`` may also be an address MMEngine reads (``https://...``). See
            :func:`spanet_mm.checkpoint.load_pretrained`.
    """

    arch_settings: Dict[str, dict] = {}
    arch_aliases: Dict[str, str] = {}
    # Where to get the authors' weights (named when a pretrained file is missing).
    weights_source: str = 'docs/model_zoo.md, "Pretrained weights"'

    # Optional arch keys and their values for the published models.
    arch_defaults: dict = {}
    # Keys (required or optional) that hold one entry per stage.
    per_stage_keys: Tuple[str, ...] = ('embed_dims',)

    def __init__(
        self,
        arch: Union[str, dict],
        in_channels: int = 3,
        out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        if not _is_positive_int(in_channels):
            raise ValueError(f'{name}: in_channels must be a positive int, got {in_channels!r}')
        if not (isinstance(drop_path_rate, (int, float)) and 0 <= drop_path_rate < 1):
            raise ValueError(f'{name}: drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        self.arch = self.resolve_arch(arch)
        self.embed_dims = list(self.arch['embed_dims'])
        self.depths = list(self.arch['depths'])
        self.num_stages = len(self.depths)
        self.in_channels = in_channels
        self.out_indices = self._check_out_indices(out_indices)
        if not (isinstance(frozen_stages, int) and -1 <= frozen_stages <= self.num_stages):
            raise ValueError(
                f'{name}: frozen_stages must be in [-1, {self.num_stages}], got {frozen_stages!r}'
            )
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp
        self.drop_path_rate = float(drop_path_rate)

    # -- arch ---------------------------------------------------------------------------------

    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> dict:
        """Turn an arch name or dict into a complete, validated arch dict."""
        name = cls.__name__
        if isinstance(arch, str):
            key = cls.arch_aliases.get(arch.lower(), arch.lower())
            if key not in cls.arch_settings:
                valid = sorted(cls.arch_settings) + sorted(cls.arch_aliases)
                raise ValueError(
                    f'Unknown {name} arch {arch!r}; valid names are '
                    f'{", ".join(valid)}, or a dict with embed_dims and depths'
                )
            arch = cls.arch_settings[key]
        if not isinstance(arch, dict):
            raise TypeError(f'{name} arch must be a str or a dict, got {type(arch).__name__}')
        missing = {'embed_dims', 'depths'} - set(arch)
        if missing:
            raise ValueError(
                f'A custom {name} arch needs the keys embed_dims and depths; '
                f'{sorted(missing)} missing from {arch}'
            )
        unknown = set(arch) - {'embed_dims', 'depths'} - set(cls.arch_defaults)
        if unknown:
            raise ValueError(
                f'Unknown {name} arch keys {sorted(unknown)}; known keys are '
                f'embed_dims, depths, {", ".join(cls.arch_defaults)}'
            )
        full = copy.deepcopy(cls.arch_defaults)
        full.update(copy.deepcopy(dict(arch)))
        depths = full['depths']
        if (
            not isinstance(depths, (list, tuple))
            or not depths
            or not all(_is_positive_int(d) for d in depths)
        ):
            raise ValueError(
                f'{name} depths must be a non-empty list of positive ints, got {depths!r}'
            )
        for key in ('embed_dims',) + tuple(cls.per_stage_keys):
            value = full[key]
            if not isinstance(value, (list, tuple)):
                raise ValueError(
                    f'{name} arch key {key} must be a list with one entry per stage, got {value!r}'
                )
            if len(value) != len(depths):
                raise ValueError(
                    f'{name} arch lists must have one entry per stage: depths has '
                    f'{len(depths)} ({list(depths)}) but {key} has {len(value)} '
                    f'({list(value)})'
                )
        if not all(_is_positive_int(d) for d in full['embed_dims']):
            raise ValueError(
                f'{name} embed_dims must be positive ints, got {list(full["embed_dims"])}'
            )
        cls._check_arch(full)
        return full

    @property
    def arch_name(self) -> Optional[str]:
        """The name of this backbone's arch in :attr:`arch_settings`, if it is a named one."""

        def same(a, b) -> bool:
            # Tuples in one table and lists in the other are the same setting.
            if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
                return list(a) == list(b)
            return a == b

        for name, arch in self.arch_settings.items():
            if all(same(self.arch.get(key), value) for key, value in arch.items()):
                return name
        return None

    @property
    def arch_label(self) -> str:
        """``arch 's', depths [...], embed_dims [...]``, for messages."""
        named = f"arch '{self.arch_name}', " if self.arch_name else ''
        return f'{named}depths {self.depths}, embed_dims {self.embed_dims}'

    @classmethod
    def generations(cls) -> List[type]:
        """This class and every other backbone generation (subclasses with an arch table),
        this class first: the layouts a checkpoint file is recognised against."""
        found, todo = [cls], [SpectralBackbone]
        while todo:
            for sub in todo.pop().__subclasses__():
                if sub not in found and sub.arch_settings:
                    found.append(sub)
                todo.append(sub)
        return found

    @classmethod
    def _check_arch(cls, arch: dict) -> None:
        """Checks of a subclass's own arch keys; raise ValueError naming what is wrong."""

    def _check_out_indices(self, out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if (
            not isinstance(out_indices, Sequence)
            or len(out_indices) == 0
            or not all(isinstance(i, int) for i in out_indices)
        ):
            raise ValueError(
                f'out_indices must be an int or a non-empty sequence of ints, got {out_indices!r}'
            )
        for index in out_indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(
                    f'out_indices must be in [{-self.num_stages}, {self.num_stages - 1}] '
                    f'for {self.num_stages} stages, got {index} in {tuple(out_indices)}'
                )
        return tuple(sorted({index % self.num_stages for index in out_indices}))

    def block_drop_path_rates(self) -> List[List[float]]:
        """Stochastic depth rate of every block, per stage: linear over all blocks of the
        network from 0 to ``drop_path_rate``."""
        rates = torch.linspace(0, self.drop_path_rate, sum(self.depths), device='cpu').tolist()
        starts = [sum(self.depths[:i]) for i in range(self.num_stages)]
        return [rates[start : start + depth] for start, depth in zip(starts, self.depths)]

    @property
    def out_channels(self) -> List[int]:
        """Channels of each output, in the order of :attr:`out_indices`."""
        return [self.embed_dims[i] for i in self.out_indices]

    # -- forward -----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} expects input of shape '
                f'(N, {self.in_channels}, H, W), got {tuple(x.shape)}'
            )
        outs = []
        for i in range(self.num_stages):
            x = self._enter_stage(i, x)
            x = self._run_stage(i, x)
            if i in self.out_indices:
                outs.append(self._output(i, x))
        return tuple(outs)

    def _stage_entry(self, index: int) -> nn.Module:
        """The module that leads into stage ``index`` (the stem, or a down-sampling)."""
        raise NotImplementedError

    def _enter_stage(self, index: int, x: Tensor) -> Tensor:
        """Stage ``index``'s input from the previous stage's output (or the image)."""
        return self._stage_entry(index)(x)

    def _output(self, index: int, x: Tensor) -> Tensor:
        """Stage ``index``'s output feature (NCHW, through ``norm{index}``)."""
        raise NotImplementedError

    def _run_stage(self, index: int, x: Tensor) -> Tensor:
        stage = self.stages[index]
        # Checkpoint whenever autograd records, even if x itself needs no gradient (the
        # input of the first trainable stage after frozen ones): the blocks' weights do.
        if not (self.with_cp and torch.is_grad_enabled()):
            return stage(x)
        for block in stage:
            x = cp.checkpoint(block, x, use_reentrant=False)
        return x

    # -- freezing ----------------------------------------------------------------------------

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules = [self._stage_entry(0)]
        for i in range(self.frozen_stages):
            if i > 0:
                modules.append(self._stage_entry(i))
            modules.append(self.stages[i])
            if i in self.out_indices:
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'SpectralBackbone':
        super().train(mode)
        self._freeze_stages()
        return self

    # -- pretrained weights ------------------------------------------------------------------

    def init_weights(self) -> None:
        init_cfg = self.init_cfg
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            load_pretrained(
                self,
                init_cfg['checkpoint'],
                prefix=init_cfg.get('prefix'),
                allow_partial=init_cfg.get('allow_partial', False),
            )
            self._is_init = True
        else:
            super().init_weights()

    @classmethod
    def holds_layout(cls, state_dict: StateDict) -> bool:
        """Whether tensors in this class's layout (after :meth:`from_release_layout`) are
        of this generation, whatever their arch."""
        return False

    @classmethod
    def is_release_layout(cls, state_dict: StateDict) -> bool:
        """Whether the keys are those of the authors' files of this generation."""
        return False

    @classmethod
    def from_release_layout(cls, state_dict: StateDict) -> Tuple[StateDict, Dict[str, List[str]]]:
        """The authors' tensors under this class's names.

        Returns:
            tuple: The renamed state_dict and the keys left out, grouped by reason. A dict
            already in this class's layout comes back unchanged.
        """
        return state_dict, {}

    @classmethod
    def arch_name_of(cls, state_dict: StateDict) -> Optional[str]:
        """The name in :attr:`arch_settings` whose backbone the tensors (in this class's
        layout) fit, or None."""
        return None
