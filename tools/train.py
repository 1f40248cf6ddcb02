#!/usr/bin/env python
"""Train with an MMDetection, MMSegmentation or MMPretrain config (its default_scope decides).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
        [--no-validate] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

Several GPUs or machines: tools/dist_train.sh; Slurm: tools/slurm_train.sh.
"""

import os.path as osp
import sys

# Let `python tools/train.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from spanet_mm.engine.cli import train  # noqa: E402

if __name__ == '__main__':
    train()
