"""The three codebases a config can belong to, and building models from their configs.

One place for what every tool needs before it can touch a model:

* which codebase a config belongs to (its ``default_scope``: ``mmdet``, ``mmseg`` or
  ``mmpretrain``) and registering that codebase's modules (:func:`codebase_of`,
  :func:`register_codebase`);
* reading a config with ``--cfg-options`` overrides (:func:`load_config`);
* building the config's model, or a part of it such as ``model.backbone``, with the codebase's
  registry inside its default scope (:func:`build_model`);
* configs written in code for models named by arch (:func:`classifier_config`,
  :func:`retinanet_config`);
* running a built model's ``mode='tensor'`` path as a plain ``forward(x)`` that returns a flat
  tuple of tensors, for tracers, FLOP counters and exporters (:class:`TensorOutputs`).

Scopes, one way: registering a codebase never changes the process's default scope.
:func:`build_model` builds inside the codebase's scope and restores the caller's afterwards;
a ``Runner`` makes the config's ``default_scope`` its own when it is created (as the
codebases' own ``tools/train.py`` rely on).
"""

from contextlib import contextmanager
from importlib import import_module
from typing import Iterator, List, Optional, Sequence, Tuple, Type, Union

from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings
from torch import Tensor, nn

from .models import SPANet, SPANetV2, SpectralBackbone

# default_scope -> the package whose ``utils.register_all_modules`` registers its modules.
CODEBASES = {'mmdet': 'mmdet', 'mmseg': 'mmseg', 'mmpretrain': 'mmpretrain'}

# The RetinaNet that ``retinanet_config`` puts a backbone into (shipped inside mmdet).
RETINANET_BASE = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


def codebase_of(cfg: Config) -> str:
    """The codebase a config belongs to, from its ``default_scope``.

    Raises:
        ValueError: The config has no ``default_scope`` or an unsupported one.
    """
    scope = cfg.get('default_scope')
    if scope not in CODEBASES:
        raise ValueError(
            f'The config must set default_scope to one of {sorted(CODEBASES)} '
            f"(usually inherited from the codebase's default_runtime.py), "
            f'got {scope!r}'
        )
    return scope


def register_codebase(scope: str) -> None:
    """Register every module of a codebase in its registries (and SPANet's, by importing
    ``spanet_mm``), leaving the process's default scope as it is."""
    if scope not in CODEBASES:
        raise ValueError(f'Expected a codebase scope, one of {sorted(CODEBASES)}, got {scope!r}')
    import_module(f'{CODEBASES[scope]}.utils').register_all_modules(init_default_scope=False)


@contextmanager
def default_scope(scope: str) -> Iterator[None]:
    """Make ``scope`` the default scope while the context is open (the caller's afterwards)."""
    with DefaultScope.overwrite_default_scope(scope):
        yield


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """Read a config file (or take a :class:`Config`), apply overrides, import its
    ``custom_imports``.

    Args:
        config (str | Config): Path of a config file, or a config built in code.
        cfg_options (dict, optional): Overrides, as ``mmengine.config.DictAction`` parses
            ``--cfg-options key=value ...`` (dotted keys allowed).
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    # Config.fromfile imports them already; a config built in code has not yet.
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    return cfg


def build_model(cfg: Config, part: Optional[str] = None) -> nn.Module:
    """Build ``cfg.model`` (or ``cfg.model.<part>``, e.g. ``part='backbone'``) with the
    registry of the config's codebase, inside its default scope, in eval mode.

    Weights keep their constructors' random initialisation: ``init_weights`` is not called,
    so nothing named in an ``init_cfg`` is read or downloaded.
    """
    scope = codebase_of(cfg)
    register_codebase(scope)
    spec = cfg.model
    for key in part.split('.') if part else []:
        if key not in spec:
            raise KeyError(
                f"The config's model has no {part!r} (looked for {key!r} in {sorted(spec)})"
            )
        spec = spec[key]
    registry = import_module(f'{CODEBASES[scope]}.registry').MODELS
    with default_scope(scope):
        model = registry.build(spec)
    # Some train() overrides return None, so do not chain on eval().
    model.eval()
    return model


# -- this package's backbones by name ---------------------------------------------------------

# ``FAMILY:ARCH`` names of the two generations, e.g. ``spanet:s``, ``spanetv2:s18_pure``.
GENERATIONS = {'spanet': SPANet, 'spanetv2': SPANetV2}

# ``FAMILY:ARCH``, or ``(family, arch)`` where the arch may be a custom dict.
ModelName = Union[str, Tuple[str, Union[str, dict]]]


def split_model_name(model: ModelName) -> Tuple[str, Union[str, dict]]:
    """``'spanet:s'`` -> ``('spanet', 's')``; a ``(family, arch)`` pair is checked and returned.

    Raises:
        ValueError: The family is not one of :data:`GENERATIONS` or the arch is missing.
    """
    family, arch = model if isinstance(model, tuple) else model.partition(':')[::2]
    if family not in GENERATIONS or not arch:
        raise ValueError(
            f'Expected spanet:ARCH or spanetv2:ARCH (e.g. spanet:s, '
            f'spanetv2:s18_pure), got {model!r}'
        )
    return family, arch


def generation_class(family: str) -> Type[SpectralBackbone]:
    """The backbone class of a generation's family name (``spanet`` or ``spanetv2``)."""
    return GENERATIONS[split_model_name((family, 'any'))[0]]


def build_backbone(model: ModelName) -> SpectralBackbone:
    """A backbone of this package by name (``spanet:s``, or ``('spanetv2', arch_dict)``), with
    its constructors' random initialisation, in eval mode."""
    family, arch = split_model_name(model)
    backbone = GENERATIONS[family](arch)
    backbone.eval()
    return backbone


# -- configs written in code -------------------------------------------------------------------


def classifier_config(model: ModelName, num_classes: int = 1000) -> Config:
    """An MMPretrain ImageNet classifier around a catalogued backbone, as its authors built it.

    * ``spanet:ARCH``: the backbone's last stage (its GroupNorm), global average pooling and
      a linear layer (the paper's Table 2 model);
    * ``spanetv2:ARCH``: mean pooling before the last norm (a LayerNorm with bias), then the
      authors' MLP head (:class:`spanet_mm.models.heads.SPANetV2ClsHead`).

    Args:
        model (str | tuple): ``FAMILY:ARCH`` (see :mod:`spanet_tools.catalogue`), or a
            ``(family, arch)`` pair whose arch may be a custom arch dict.
        num_classes (int): Number of classes. Defaults to 1000.
    """
    family, arch = split_model_name(model)
    width = GENERATIONS[family].resolve_arch(arch)['embed_dims'][-1]
    if family == 'spanet':
        backbone = dict(type='SPANet', arch=arch, out_indices=(3,))
        neck = dict(type='GlobalAveragePooling')
        head = dict(
            type='LinearClsHead',
            num_classes=num_classes,
            in_channels=width,
            loss=dict(type='CrossEntropyLoss'),
        )
    else:
        backbone = dict(type='SPANetV2', arch=arch, out_indices=(3,), gap_before_final_norm=True)
        neck = None
        head = dict(
            type='SPANetV2ClsHead',
            num_classes=num_classes,
            in_channels=width,
            loss=dict(type='CrossEntropyLoss'),
        )
    return Config(
        dict(
            default_scope='mmpretrain',
            custom_imports=dict(imports=['spanet_mm'], allow_failed_imports=False),
            model=dict(type='ImageClassifier', backbone=backbone, neck=neck, head=head),
        )
    )


def retinanet_config(model: ModelName) -> Config:
    """MMDetection's RetinaNet R50-FPN 1x with a SPANet or SPANetV2 backbone (strides 8, 16,
    32 into the FPN, as the codebase's ResNet-50); ``model`` as for
    :func:`classifier_config`."""
    family, arch = split_model_name(model)
    cls = GENERATIONS[family]
    cfg = get_config(RETINANET_BASE)  # reads the config shipped inside the mmdet package
    dims = cls.resolve_arch(arch)['embed_dims']
    cfg.model.backbone = ConfigDict(type=cls.__name__, arch=arch, out_indices=(1, 2, 3))
    cfg.model.neck.in_channels = list(dims[1:])
    # The base's start_level=1 skips ResNet's stride-4 output; ours is not given to the FPN.
    cfg.model.neck.start_level = 0
    cfg.custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)
    return cfg


# -- the tensor path of a built model ----------------------------------------------------------


def data_samples(scope: Optional[str], height: int, width: int, batch: int = 1) -> Optional[list]:
    """Data samples carrying the meta information a real batch of ``height x width`` images
    would, for the codebases whose tensor path reads it (``None`` where none is needed)."""
    meta = dict(
        img_shape=(height, width),
        ori_shape=(height, width),
        pad_shape=(height, width),
        batch_input_shape=(height, width),
        scale_factor=(1.0, 1.0),
    )
    if scope == 'mmdet':
        # A codebase is imported only when one of its models is exported or counted.
        from mmdet.structures import DetDataSample

        return [DetDataSample(metainfo=meta) for _ in range(batch)]
    if scope == 'mmseg':
        # (as above)
        from mmseg.structures import SegDataSample

        return [SegDataSample(metainfo=meta) for _ in range(batch)]
    return None


def _flatten(out) -> List[Tensor]:
    if out is None:
        return []
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flatten(item)]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flatten(item)]
    raise TypeError(
        f'Expected tensors or (nested) tuples, lists or dicts of tensors, got {type(out).__name__}'
    )


class TensorOutputs(nn.Module):
    """``forward(x)`` of a backbone or an OpenMMLab model as a flat tuple of tensors.

    A backbone (any module without a data preprocessor) is called as ``model(x)``; an
    OpenMMLab model runs its ``mode='tensor'`` path (no post-processing), with
    ``data_samples`` if its codebase needs them. Nested outputs (e.g. a detector head's
    per-level scores and boxes) are flattened in order.
    """

    def __init__(self, model: nn.Module, data_samples: Optional[list] = None) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    @property
    def is_openmmlab_model(self) -> bool:
        return hasattr(self.model, 'data_preprocessor')

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if self.is_openmmlab_model:
            out = self.model(x, self.data_samples, mode='tensor')
        else:
            out = self.model(x)
        return tuple(_flatten(out))


def tensor_outputs(
    model: nn.Module, scope: Optional[str], shape: Sequence[int], batch: int = 1
) -> TensorOutputs:
    """:class:`TensorOutputs` of ``model`` (of codebase ``scope``, or a bare backbone for
    ``None``) with the data samples an input of ``shape = (height, width)`` needs."""
    height, width = (int(s) for s in shape)
    return TensorOutputs(model, data_samples(scope, height, width, batch)).eval()
