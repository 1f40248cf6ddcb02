"""End to end on the CPU: the ImageNet config trained with tools/train.py and, with two
processes on gloo, with tools/dist_train.sh, on a generated ImageNet-format dataset and
evaluated with tools/test.py (top-1 accuracy).

Only data roots, image scale, epochs, batch size and the arch size are overridden (and the
distributed backend, gloo, since there is no GPU); everything else is the real config.
"""
import pickle

import pytest
import torch
from conftest import (REPO_ROOT, TINY_ARCH, arch_options, cfg_options, read_test_metrics,
                      run_command, tool, train_scalars)

CONFIG = REPO_ROOT / 'configs/mmpretrain/spanet_s_in1k.py'
EPOCHS = 2


def tiny_options(imagenet_options, batch_size):
    return imagenet_options + arch_options() + cfg_options(
        train_cfg__max_epochs=EPOCHS, train_dataloader__batch_size=batch_size,
        val_dataloader__batch_size=batch_size, test_dataloader__batch_size=batch_size,
        model__head__in_channels=TINY_ARCH['embed_dims'][-1])


def check_test(checkpoint, options, work_dir, num_val):
    out = work_dir / 'predictions.pkl'
    test_log = run_command(['python', tool('test.py'), CONFIG, checkpoint, '--work-dir',
                            work_dir, '--out', out, '--cfg-options', *options])
    assert f'Load checkpoint from {checkpoint}' in test_log
    metrics = read_test_metrics(work_dir)
    for key in ('accuracy/top1', 'accuracy/top5'):
        assert 0 <= metrics[key] <= 100, (key, metrics)
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == num_val
    return metrics


@pytest.mark.slow
def test_classifier_train_and_test(imagenet_options, imagenet_like, tmp_path):
    options = tiny_options(imagenet_options, batch_size=8)
    train_log = run_command(['python', tool('train.py'), CONFIG, '--work-dir',
                             tmp_path / 'train', '--cfg-options', *options])
    assert 'Distributed training: False' in train_log
    assert train_scalars(tmp_path / 'train')[-1]['epoch'] == EPOCHS
    checkpoint = tmp_path / 'train' / f'epoch_{EPOCHS}.pth'
    num_val = len(open(imagenet_like['val_ann']).read().split('\n')) - 1
    metrics = check_test(checkpoint, options, tmp_path / 'test', num_val)
    print('ImageNet e2e metrics:', metrics)
    state = torch.load(checkpoint, map_location='cpu')
    assert state['meta']['epoch'] == EPOCHS
    assert state['state_dict']['head.fc.weight'].shape == (1000, TINY_ARCH['embed_dims'][-1])


@pytest.mark.slow
def test_classifier_dist_train_two_cpu_processes(imagenet_options, imagenet_like, tmp_path):
    options = tiny_options(imagenet_options, batch_size=4) + cfg_options(
        env_cfg__dist_cfg__backend='gloo')
    # One thread per process: two processes on two cores.
    log = run_command(['bash', tool('dist_train.sh'), CONFIG, 2, '--work-dir',
                       tmp_path / 'train', '--cfg-options', *options],
                      env=dict(PORT='29617', OMP_NUM_THREADS='1'))
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # MMEngine's name for the world size
    records = train_scalars(tmp_path / 'train')
    # 16 images, 4 per process and iteration: 2 iterations per epoch.
    assert records[-1]['iter'] == EPOCHS * 2
    checkpoint = tmp_path / 'train' / f'epoch_{EPOCHS}.pth'
    num_val = len(open(imagenet_like['val_ann']).read().split('\n')) - 1
    check_test(checkpoint, tiny_options(imagenet_options, batch_size=4),
               tmp_path / 'test', num_val)
