"""SPANet (ICCV 2023) and SPANetV2 (TPAMI 2026) as backbones for MMDetection, MMSegmentation
and MMPretrain.

Importing this package registers ``SPANet``, ``SPANetV2``, ``SPANetV2ClsHead`` and
``LayerDecayOptimWrapperConstructor`` in MMEngine's root registries, which the three
codebases' registries fall back to, so ``custom_imports=dict(imports=['spanet_mm'])`` is all a
config needs. It also makes MMPretrain's name-based API (``get_model('spanet_s_in1k')``) know
this package's models, without importing MMPretrain itself; lets ``torch.load`` read Runner
checkpoints under its ``weights_only`` default; and registers the file backend that writes
checkpoints atomically (:mod:`spanet_mm.engine`). Modules that moved to the repository's
``spanet_tools/`` fail to import with their new name (:mod:`spanet_mm.moved`).
"""

from . import engine, model_hub, moved  # noqa: F401  engine registers on import (see above)
from .models import SPAM, ExSPAM, SPANet, SPANetV2, SpectralPoolingFilter, spectral_mask
from .optim import LayerDecayOptimWrapperConstructor
from .version import __version__

model_hub.install()
moved.install()

__all__ = [
    'SPANet',
    'SPANetV2',
    'SPAM',
    'ExSPAM',
    'SpectralPoolingFilter',
    'spectral_mask',
    'LayerDecayOptimWrapperConstructor',
    '__version__',
]
