"""One catalogue of the backbones the tools build by name, with one name syntax: ``FAMILY:ARCH``.

=====================  ========================================================================
family                 what ``FAMILY:ARCH`` builds (all four stage outputs, random weights)
=====================  ========================================================================
``spanet``             :class:`spanet_mm.SPANet` (``spanet:s``, ``spanet:m``, ...)
``spanet-cp``          the same with ``with_cp=True`` (gradient checkpointing)
``spanet-nofilter``    the same with every Spectral Pooling Filter replaced by the identity
``reference``          :class:`spanet_tools.reference.ReferenceSPANet`, the paper-literal model
``spanetv2``           :class:`spanet_mm.SPANetV2` (``spanetv2:s18_pure``, ...)
``spanetv2-cp``        the same with ``with_cp=True``
``reference-v2``       :class:`spanet_tools.reference.ReferenceSPANetV2`, written from the spec
``convnext``           MMPretrain's ``ConvNeXt`` (``convnext:tiny``)
``swin``               MMPretrain's ``SwinTransformer`` (``swin:tiny``)
``poolformer``         MMPretrain's ``PoolFormer`` (``poolformer:s24``)
=====================  ========================================================================

Each family also says what its token mixer is (for the spectra of
``tools/analysis/spectrum.py``): the module types to hook and, where a type is too broad
(ConvNeXt's depth-wise convolution is an ``nn.Conv2d``), which of them by name.
"""

import copy
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

from mmengine.runner import load_checkpoint
from torch import nn

from spanet_mm.checkpoint import CheckpointError, load_pretrained
from spanet_mm.models import SPAM, ExSPAM, SPANet, SPANetV2, SpectralBackbone
from spanet_mm.models.attention import Attention, MixAttention

from .reference import ReferenceSPAM, ReferenceSPANet, ReferenceSPANetV2
from .reference.spanetv2 import ReferenceAttention, ReferenceExSPAM

Arch = Union[str, dict]


@dataclass(frozen=True)
class Family:
    """How to build one family of backbones and find its token mixers.

    Attributes:
        build (callable): ``build(arch) -> nn.Module``.
        archs (callable): ``archs() -> list[str]``, the arch names the family knows.
        mixer (str): What the token mixer is, for figure labels.
        mixer_types (callable): ``mixer_types() -> tuple[type, ...]`` of the mixer modules.
        select (callable): ``select(module_name) -> bool``, which modules of those types are
            the mixers (all by default).
        spectral (bool): Whether the family is one of this package's SPANet generations (its
            ``arch`` may then be a custom dict).
        channels_last (bool): Whether the token mixers work on ``(B, H, W, C)`` tensors.
    """

    build: Callable[[Arch], nn.Module]
    archs: Callable[[], List[str]]
    mixer: str
    mixer_types: Callable[[], Tuple[type, ...]]
    select: Callable[[str], bool] = field(default=lambda name: True)
    spectral: bool = False
    channels_last: bool = False


# -- this package's backbones ----------------------------------------------------------------


def _spam_types():
    return (SPAM,)


def _reference_spam_types():
    return (ReferenceSPAM,)


def _v2_mixer_types():
    return (ExSPAM, Attention, MixAttention)


def _reference_v2_mixer_types():
    return (ReferenceExSPAM, ReferenceAttention)


def without_filters(model: nn.Module) -> nn.Module:
    """A copy of a SPANet whose Spectral Pooling Filters are the identity, sharing all its
    parameters and buffers (the same tensors in the same memory, so only the filters differ)."""
    shared = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    bare = copy.deepcopy(model, memo=shared)
    found = False
    for module in bare.modules():
        if isinstance(module, SPAM):
            module.spectral_filter = nn.Identity()
            found = True
    if not found:
        raise TypeError(f'{type(model).__name__} has no SPAM whose filter could be removed')
    return bare


def _build_spanet(arch: Arch) -> nn.Module:
    return SPANet(arch)


def _build_spanet_cp(arch: Arch) -> nn.Module:
    return SPANet(arch, with_cp=True)


def _build_spanet_nofilter(arch: Arch) -> nn.Module:
    return without_filters(_build_spanet(arch))


def _build_reference(arch: Arch) -> nn.Module:
    return ReferenceSPANet(**SPANet.resolve_arch(arch))


def _build_spanetv2(arch: Arch) -> nn.Module:
    return SPANetV2(arch)


def _build_spanetv2_cp(arch: Arch) -> nn.Module:
    return SPANetV2(arch, with_cp=True)


def _build_reference_v2(arch: Arch) -> nn.Module:
    return ReferenceSPANetV2(**SPANetV2.resolve_arch(arch))


def _named_archs(cls: type) -> Callable[[], List[str]]:
    return lambda: sorted(cls.arch_settings)


# -- MMPretrain's backbones ------------------------------------------------------------------


def _build_convnext(arch: Arch) -> nn.Module:
    from mmpretrain.models.backbones import ConvNeXt

    return ConvNeXt(arch, out_indices=(0, 1, 2, 3))


def _build_swin(arch: Arch) -> nn.Module:
    from mmpretrain.models.backbones import SwinTransformer

    return SwinTransformer(arch, img_size=224, out_indices=(0, 1, 2, 3))


def _build_poolformer(arch: Arch) -> nn.Module:
    from mmpretrain.models.backbones import PoolFormer

    # PoolFormer's out_indices count the stages and the down-samplings between them.
    return PoolFormer(arch, out_indices=(0, 2, 4, 6))


def _mmpretrain_archs(name: str, table: str) -> Callable[[], List[str]]:
    def archs():
        from mmpretrain.models import backbones

        return sorted(getattr(getattr(backbones, name), table))

    return archs


def _conv_types():
    return (nn.Conv2d,)


def _swin_types():
    from mmpretrain.models.utils import ShiftWindowMSA

    return (ShiftWindowMSA,)


def _pool_types():
    from mmpretrain.models.backbones.poolformer import Pooling

    return (Pooling,)


FAMILIES: Dict[str, Family] = {
    'spanet': Family(_build_spanet, _named_archs(SPANet), 'SPAM', _spam_types, spectral=True),
    'spanet-cp': Family(_build_spanet_cp, _named_archs(SPANet), 'SPAM', _spam_types, spectral=True),
    'spanet-nofilter': Family(
        _build_spanet_nofilter,
        _named_archs(SPANet),
        'SPAM without its filter',
        _spam_types,
        spectral=True,
    ),
    'reference': Family(
        _build_reference,
        _named_archs(SPANet),
        'SPAM (FFT reference)',
        _reference_spam_types,
        spectral=True,
    ),
    'spanetv2': Family(
        _build_spanetv2,
        _named_archs(SPANetV2),
        'ExSPAM (and attention in hybrids)',
        _v2_mixer_types,
        spectral=True,
        channels_last=True,
    ),
    'spanetv2-cp': Family(
        _build_spanetv2_cp,
        _named_archs(SPANetV2),
        'ExSPAM (and attention in hybrids)',
        _v2_mixer_types,
        spectral=True,
        channels_last=True,
    ),
    'reference-v2': Family(
        _build_reference_v2,
        _named_archs(SPANetV2),
        'ExSPAM (reference; and attention in hybrids)',
        _reference_v2_mixer_types,
        spectral=True,
        channels_last=True,
    ),
    'convnext': Family(
        _build_convnext,
        _mmpretrain_archs('ConvNeXt', 'arch_settings'),
        'DepConv (7x7 depth-wise)',
        _conv_types,
        select=lambda name: name.endswith('.depthwise_conv'),
    ),
    'swin': Family(
        _build_swin,
        _mmpretrain_archs('SwinTransformer', 'arch_zoo'),
        'Local MSA (shifted windows)',
        _swin_types,
    ),
    'poolformer': Family(
        _build_poolformer,
        _mmpretrain_archs('PoolFormer', 'arch_settings'),
        'Pooling (pool(x) - x)',
        _pool_types,
    ),
}

EXAMPLES = (
    'spanet:s',
    'spanetv2:s18_pure',
    'reference:s',
    'reference-v2:s18_pure',
    'convnext:tiny',
    'swin:tiny',
    'poolformer:s24',
)


def split_name(name: str) -> Tuple[str, str]:
    """``'spanet:s'`` -> ``('spanet', 's')``, checking that the family exists.

    Raises:
        ValueError: The name is not ``FAMILY:ARCH`` with a catalogued family.
    """
    family, sep, arch = name.partition(':')
    if not sep or not arch or family not in FAMILIES:
        raise ValueError(
            f'Expected a backbone name FAMILY:ARCH (e.g. {", ".join(EXAMPLES)}) '
            f'with FAMILY one of {", ".join(FAMILIES)}; got {name!r}'
        )
    return family, arch


def family_of(name: str) -> Family:
    """The :class:`Family` of ``FAMILY:ARCH`` (or of a bare ``FAMILY``)."""
    family = name.partition(':')[0]
    if family not in FAMILIES:
        raise ValueError(
            f'Unknown backbone family {family!r} (of {name!r}); known: {", ".join(FAMILIES)}'
        )
    return FAMILIES[family]


def backbone_class(family: str) -> type:
    """The SPANet generation behind a family of this package (``SPANet`` or ``SPANetV2``)."""
    if family in ('spanet', 'spanet-cp', 'spanet-nofilter', 'reference'):
        return SPANet
    if family in ('spanetv2', 'spanetv2-cp', 'reference-v2'):
        return SPANetV2
    raise ValueError(f"{family!r} is not a family of this package's backbones")


def build_backbone(
    name: str, arch: Optional[Arch] = None, checkpoint: Optional[str] = None
) -> nn.Module:
    """Build a catalogued backbone, in eval mode.

    Args:
        name (str): ``FAMILY:ARCH``, e.g. ``spanet:s``; with ``arch`` also a bare ``FAMILY``.
        arch (str | dict, optional): Replaces the name's arch, e.g. a custom arch dict for the
            families of this package (a tiny one in tests).
        checkpoint (str, optional): Weights to load (:func:`load_weights`); random otherwise.
    """
    if arch is None:
        family, arch = split_name(name)
    else:
        family = name.partition(':')[0]
        if not family_of(family).spectral and not isinstance(arch, str):
            raise ValueError(
                f"A custom arch dict applies to this package's backbones, not to {family}"
            )
    model = FAMILIES[family].build(arch)
    if checkpoint:
        load_weights(model, checkpoint)
    # Some backbones' train() overrides return None, so do not chain on eval().
    model.eval()
    return model


def load_weights(model: nn.Module, checkpoint: str) -> None:
    """Load weights into a backbone: SPANet and SPANetV2 through
    :func:`spanet_mm.checkpoint.load_pretrained` (release, own and downstream layouts), any
    other with MMEngine (``backbone.`` and ``module.`` prefixes stripped)."""
    if not osp.exists(checkpoint):
        raise CheckpointError(f'No checkpoint file at {checkpoint!r}')
    if isinstance(model, SpectralBackbone):
        # Its own checks say what is wrong with a path that is not a checkpoint file.
        load_pretrained(model, checkpoint)
    else:
        if not osp.isfile(checkpoint):
            raise CheckpointError(f'No checkpoint file at {checkpoint!r}')
        load_checkpoint(
            model,
            checkpoint,
            map_location='cpu',
            strict=False,
            revise_keys=[(r'^backbone\.', ''), (r'^module\.', '')],
        )


def mixer_modules(model: nn.Module, name: str) -> List[Tuple[str, nn.Module]]:
    """``(module name, module)`` of every token mixer of a catalogued backbone (``name``:
    ``FAMILY:ARCH`` or ``FAMILY``), in forward order."""
    family = family_of(name)
    types = family.mixer_types()
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, types) and family.select(n)]
    if not found:
        raise ValueError(f'No token mixer ({family.mixer}) found in {name}')
    return found


def describe() -> str:
    """One line per family, with its arch names, for ``--help`` texts and errors."""
    lines = []
    for family, spec in FAMILIES.items():
        try:
            archs = ', '.join(spec.archs())
        except ImportError:  # e.g. a generation or codebase not installed
            archs = '?'
        lines.append(f'{family}:ARCH ({archs})')
    return '; '.join(lines)
