"""Straightforward, paper-literal models in the authors' checkpoint layouts.

Slow on purpose: they compute each generation's spectral mixer the way the paper (and the
authors' release) write it, and are the yardsticks of the tests and of
``tools/analysis/benchmark.py``. ``spanet`` holds SPANet (ICCV 2023), ``spanetv2`` SPANetV2.
"""

from .spanet import (
    ReferenceBlock,
    ReferenceMlp,
    ReferenceScale,
    ReferenceSPAM,
    ReferenceSPANet,
    ReferenceSPF,
)
from .spanetv2 import ReferenceExSPAM, ReferenceSPANetV2

__all__ = [
    'ReferenceSPANet',
    'ReferenceSPAM',
    'ReferenceSPF',
    'ReferenceBlock',
    'ReferenceMlp',
    'ReferenceScale',
    'ReferenceSPANetV2',
    'ReferenceExSPAM',
]
