"""Shared pieces of the analysis tools: building models, reading photographs, hooking layers."""
import os
import os.path as osp
from contextlib import contextmanager
from importlib import import_module
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor, nn

# Codebases whose configs the tools can build, by their ``default_scope``.
SCOPES = ('mmpretrain', 'mmdet', 'mmseg')

# ImageNet statistics (RGB, 0-255), used by all the codebases' data preprocessors.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# Colour photographs that scikit-image ships inside its package (no download).
SKIMAGE_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
                  'motorcycle_left.png')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def register_scope(scope: str) -> None:
    """Register all modules of a codebase (without changing the process' default scope)."""
    if scope not in SCOPES:
        raise ValueError(f'default_scope must be one of {SCOPES}, got {scope!r}')
    import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    import spanet_mm  # noqa: F401 -- registers SPANet in the root registry


def load_config(config: Union[str, Config],
                cfg_options: Optional[dict] = None) -> Config:
    """Read a config file, apply overrides and import its ``custom_imports``."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    return cfg


def config_scope(cfg: Config) -> str:
    """The codebase a config belongs to (its ``default_scope``)."""
    scope = cfg.get('default_scope')
    if scope is None:
        raise ValueError('The config has no default_scope; expected one of '
                         f'{SCOPES} to know which registry builds its model')
    return scope


def build_from_config(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` with the registry of the config's codebase.

    Weights are not initialised from ``init_cfg`` (nothing is downloaded or read):
    the model keeps its constructors' random initialisation.
    """
    from mmengine.registry import DefaultScope
    scope = config_scope(cfg)
    register_scope(scope)
    registry = import_module(f'{scope}.registry').MODELS
    # Only while building: the caller's default scope stays as it was.
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    # Some train() overrides return None, so do not chain on eval().
    model.eval()
    return model


def classifier_config(arch: Union[str, dict], num_classes: int = 1000) -> Config:
    """An MMPretrain ImageNet classifier around a SPANet backbone, as the paper's Table 2.

    The release's classifier is the backbone, a GroupNorm on the last stage, global
    average pooling and a linear layer, which is what this builds.
    """
    return Config(
        dict(
            default_scope='mmpretrain',
            custom_imports=dict(imports=['spanet_mm'], allow_failed_imports=False),
            model=dict(
                type='ImageClassifier',
                backbone=dict(type='SPANet', arch=arch, out_indices=(3, )),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=num_classes,
                          in_channels=_last_embed_dim(arch),
                          loss=dict(type='CrossEntropyLoss')))))


def _last_embed_dim(arch: Union[str, dict]) -> int:
    from spanet_mm import SPANet
    return SPANet.resolve_arch(arch)['embed_dims'][-1]


def image_paths(source: Optional[str] = None) -> List[str]:
    """Photographs to analyse: the files of ``source`` (a folder or one image), or by
    default the colour photographs scikit-image ships (astronaut, chelsea, ...)."""
    if source is None:
        import skimage
        folder = osp.join(osp.dirname(skimage.__file__), 'data')
        paths = [osp.join(folder, name) for name in SKIMAGE_PHOTOS]
        paths = [p for p in paths if osp.isfile(p)]
    elif osp.isdir(source):
        paths = sorted(
            osp.join(source, name) for name in os.listdir(source)
            if name.lower().endswith(IMAGE_EXTENSIONS))
    elif osp.isfile(source):
        paths = [source]
    else:
        raise FileNotFoundError(f'Expected an image file or a folder of images, got '
                                f'{source!r}, which does not exist')
    if not paths:
        raise FileNotFoundError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) found in '
                                f'{source or "scikit-image data"}')
    return paths


def read_rgb(path: str) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 RGB array (grey and RGBA converted)."""
    from skimage import io
    image = io.imread(path)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f'{path}: expected a grey, RGB or RGBA image, got an array of '
                         f'shape {image.shape}')
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(image.max(), 1))).astype(np.uint8)
    return image


def to_model_input(image: np.ndarray, size: int = 224, crop: bool = True) -> Tensor:
    """Resize the shorter side to ``size`` (keeping the aspect ratio), centre crop to
    ``size x size`` if ``crop``, and normalise with ImageNet statistics.

    Returns:
        Tensor: Shape ``(1, 3, H, W)``, float32 (``H = W = size`` with ``crop``).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'Expected an (H, W, 3) RGB image, got shape {image.shape}')
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    height, width = x.shape[-2:]
    scale = size / min(height, width)
    new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
    x = torch.nn.functional.interpolate(x, size=new_hw, mode='bilinear',
                                        align_corners=False, antialias=True)
    if crop:
        top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
        x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_backbone_checkpoint(model: nn.Module, checkpoint: str) -> None:
    """Load weights into a backbone: SPANet through spanet_mm's reader (release, own and
    downstream layouts), anything else with MMEngine (a ``backbone.`` prefix stripped)."""
    from spanet_mm import SPANet
    if isinstance(model, SPANet):
        from spanet_mm.checkpoint import CheckpointError, load_pretrained
        if not osp.isfile(checkpoint):
            raise CheckpointError(f'No checkpoint file at {checkpoint!r}')
        load_pretrained(model, checkpoint)
    else:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False,
                        revise_keys=[(r'^backbone\.', ''), (r'^module\.', '')])


def modules_of_type(model: nn.Module,
                    types: Union[type, Tuple[type, ...]]) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` for every submodule that is an instance of ``types``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, types)]


@contextmanager
def capture(modules: Sequence[Tuple[str, nn.Module]],
            hook: Callable[[nn.Module, tuple, object], object],
            pre: bool = False) -> Iterator[Dict[str, list]]:
    """Record ``hook(module, inputs, output)`` (or ``hook(module, inputs, None)`` with
    ``pre``) for each call of the named modules while the context is open.

    Yields:
        dict: name -> list of what the hook returned, one entry per call.
    """
    records: Dict[str, list] = {name: [] for name, _ in modules}
    handles = []
    for name, module in modules:
        if pre:
            def fn(mod, args, _name=name):
                records[_name].append(hook(mod, args, None))
            handles.append(module.register_forward_pre_hook(fn))
        else:
            def fn(mod, args, out, _name=name):
                records[_name].append(hook(mod, args, out))
            handles.append(module.register_forward_hook(fn))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
