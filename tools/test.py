#!/usr/bin/env python
"""Test (and evaluate) a checkpoint with an MMDetection, MMSegmentation or MMPretrain config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE_OR_DIR]
        [--show-dir DIR] [--show] [--tta] [--amp] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

``--out``: a .pkl of predictions (mmdet, mmpretrain) or a directory of PNGs (mmseg).
Several GPUs or machines: tools/dist_test.sh; Slurm: tools/slurm_test.sh.
"""

import os.path as osp
import sys

# Let `python tools/test.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from spanet_mm.engine.cli import test  # noqa: E402

if __name__ == '__main__':
    test()
