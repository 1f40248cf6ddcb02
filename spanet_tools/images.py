"""Photographs for the tools: finding and reading them, and turning them into model input.

Nothing is downloaded: by default the tools use the colour photographs that scikit-image ships
inside its package.
"""

import os
import os.path as osp
from typing import List, Optional

import numpy as np
import torch
from torch import Tensor

# ImageNet statistics (RGB, 0-255), used by all the codebases' data preprocessors.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# Colour photographs that scikit-image ships inside its package (no download).
SKIMAGE_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def skimage_photos() -> List[str]:
    """Paths of the colour photographs scikit-image ships (astronaut, chelsea, ...)."""
    import skimage

    folder = osp.join(osp.dirname(skimage.__file__), 'data')
    return [p for p in (osp.join(folder, name) for name in SKIMAGE_PHOTOS) if osp.isfile(p)]


def image_paths(source: Optional[str] = None) -> List[str]:
    """Photographs to analyse: the files of ``source`` (a folder or one image), or by
    default the colour photographs scikit-image ships.

    Raises:
        FileNotFoundError: ``source`` does not exist, or holds no image.
    """
    if source is None:
        paths = skimage_photos()
    elif osp.isdir(source):
        paths = sorted(
            osp.join(source, name)
            for name in os.listdir(source)
            if name.lower().endswith(IMAGE_EXTENSIONS)
        )
    elif osp.isfile(source):
        paths = [source]
    else:
        raise FileNotFoundError(
            f'Expected an image file or a folder of images, got {source!r}, which does not exist'
        )
    if not paths:
        raise FileNotFoundError(
            f'No images ({", ".join(IMAGE_EXTENSIONS)}) found in {source or "scikit-image data"}'
        )
    return paths


def read_rgb(path: str) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 RGB array (grey and RGBA converted)."""
    from skimage import io

    image = io.imread(path)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(
            f'{path}: expected a grey, RGB or RGBA image, got an array of shape {image.shape}'
        )
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(image.max(), 1))).astype(np.uint8)
    return image


def to_model_input(image: np.ndarray, size: Optional[int] = 224, crop: bool = True) -> Tensor:
    """An RGB image as a normalised ``(1, 3, H, W)`` float32 batch.

    Args:
        image (np.ndarray): ``(H, W, 3)`` RGB, 0-255.
        size (int, optional): Resize the shorter side to ``size`` (aspect ratio kept);
            ``None`` keeps the image's size.
        crop (bool): With ``size``, centre crop to ``size x size``.

    Returns:
        Tensor: ``(image - IMAGENET_MEAN) / IMAGENET_STD``, shape ``(1, 3, H, W)``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'Expected an (H, W, 3) RGB image, got shape {image.shape}')
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    if size is not None:
        height, width = x.shape[-2:]
        scale = size / min(height, width)
        new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
        x = torch.nn.functional.interpolate(
            x, size=new_hw, mode='bilinear', align_corners=False, antialias=True
        )
        if crop:
            top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
            x = x[..., top : top + size, left : left + size]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
