from .spam import SPAM
from .spanet import SPANet, SPANetBlock
from .spectral_filter import SpectralPoolingFilter, spectral_mask

__all__ = ['SPANet', 'SPANetBlock', 'SPAM', 'SpectralPoolingFilter', 'spectral_mask']
