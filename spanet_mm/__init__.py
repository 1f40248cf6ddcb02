"""SPANet (ICCV 2023) as a backbone for MMDetection, MMSegmentation and MMPretrain.

Importing this package registers ``SPANet`` in MMEngine's root ``MODELS`` registry, which
the three codebases' registries fall back to, so ``custom_imports=dict(imports=['spanet_mm'])``
is all a config needs.
"""
from . import engine  # noqa: F401  allow-lists Runner checkpoints for torch.load
from .models import SPAM, SPANet, SpectralPoolingFilter, spectral_mask
from .version import __version__

__all__ = ['SPANet', 'SPAM', 'SpectralPoolingFilter', 'spectral_mask', '__version__']
