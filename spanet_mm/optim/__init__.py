"""Optimizer wrapper constructors (registered in MMEngine's root registry on import)."""

from .layer_decay import LayerDecayOptimWrapperConstructor, backbone_layer_ids

__all__ = ['LayerDecayOptimWrapperConstructor', 'backbone_layer_ids']
