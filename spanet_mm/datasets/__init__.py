"""Generated datasets in the real on-disk formats, for tests and the demo."""

from .synthetic import make_ade20k_like, make_coco_shapes, make_imagenet_like

__all__ = ['make_coco_shapes', 'make_ade20k_like', 'make_imagenet_like']
