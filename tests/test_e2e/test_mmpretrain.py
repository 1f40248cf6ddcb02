"""End to end on the CPU: the ImageNet config trained with tools/train.py on a generated
ImageNet-format dataset and evaluated with tools/test.py (top-1 accuracy). Distributed
training with this config (tools/dist_train.sh, Slurm) is tested in
tests/test_engine/test_cpu_distributed.py.

Only data roots, image scale, epochs, batch size and the arch size are overridden, and the
pretrained file is opted out of (``init_cfg=None``); everything else is the real config.
"""

import pickle

import pytest
import torch

from helpers.commands import run_command, run_test_tool, tool, train_scalars
from helpers.e2e_checks import IMAGENET_CONFIG as CONFIG
from helpers.e2e_checks import IMAGENET_EPOCHS as EPOCHS
from helpers.e2e_checks import check_classification, tiny_options
from helpers.options import TINY_ARCH


@pytest.mark.slow
def test_classifier_train_and_test(imagenet_options, imagenet_like, tmp_path):
    options = tiny_options(imagenet_options, batch_size=8)
    train_log = run_command(
        [
            'python',
            tool('train.py'),
            CONFIG,
            '--work-dir',
            tmp_path / 'train',
            '--cfg-options',
            *options,
        ]
    )
    assert 'Distributed training: False' in train_log
    # 16 images, 8 per iteration: two iterations per epoch, every one run.
    assert train_scalars(tmp_path / 'train')[-1]['iter'] == 2 * EPOCHS
    checkpoint = tmp_path / 'train' / f'epoch_{EPOCHS}.pth'
    state = torch.load(checkpoint, map_location='cpu')
    assert state['meta']['epoch'] == EPOCHS
    assert state['state_dict']['head.fc.weight'].shape == (1000, TINY_ARCH['embed_dims'][-1])

    out = tmp_path / 'predictions.pkl'
    metrics = run_test_tool(CONFIG, checkpoint, tmp_path / 'test', out, options)
    print('ImageNet e2e metrics:', metrics)
    with open(out, 'rb') as f:
        check_classification(pickle.load(f), imagenet_like['val_ann'], metrics)
