"""SPANet (ICCV 2023) as a backbone for MMDetection, MMSegmentation and MMPretrain.

Importing this package registers ``SPANet`` in MMEngine's root ``MODELS`` registry, which
the three codebases' registries fall back to, so ``custom_imports=dict(imports=['spanet_mm'])``
is all a config needs.
"""
from . import engine  # noqa: F401  allow-lists Runner checkpoints for torch.load
from .models import SPAM, SPANet, SpectralPoolingFilter, spectral_mask
from .models import ExSPAM, SPANetV2
from .optim import LayerDecayOptimWrapperConstructor  # noqa: F401  registers it in MMEngine
from .version import __version__
from . import model_hub  # noqa: E402  MMPretrain's names spanet_*_in1k (registered lazily)

model_hub.install()

__all__ = ['SPANet', 'SPAM', 'SpectralPoolingFilter', 'spectral_mask', '__version__',
           'SPANetV2', 'ExSPAM']
