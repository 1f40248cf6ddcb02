from .attention import Attention, MixAttention
from .base import ResScale, SpectralBackbone
from .exspam import ExSPAM
from .spam import SPAM
from .spanet import SPANet, SPANetBlock
from .spanetv2 import SPANetV2, SPANetV2Block
from .spectral_filter import SpectralPoolingFilter, spectral_mask

__all__ = [
    'SpectralBackbone',
    'ResScale',
    'SPANet',
    'SPANetBlock',
    'SPAM',
    'SpectralPoolingFilter',
    'spectral_mask',
    'SPANetV2',
    'SPANetV2Block',
    'ExSPAM',
    'Attention',
    'MixAttention',
]
