"""End to end on the CPU: the Semantic FPN config trained with tools/train.py on a generated
ADE20K-format dataset and evaluated with tools/test.py (mIoU).

Only data roots, image scale (and crop size), iterations, batch size and the arch size are
overridden; everything else is the real config.
"""
from pathlib import Path

import pytest
import torch
from conftest import (REPO_ROOT, TINY_ARCH, arch_options, cfg_options, read_test_metrics,
                      run_command, tool)

CONFIG = REPO_ROOT / 'configs/mmseg/fpn_spanet_s_ade20k_80k.py'
ITERS = 8


@pytest.mark.slow
def test_semantic_fpn_train_and_test(ade20k_options, ade20k_like, tmp_path):
    options = ade20k_options + arch_options() + cfg_options(
        train_cfg__max_iters=ITERS, train_cfg__val_interval=ITERS,
        default_hooks__checkpoint__interval=ITERS, train_dataloader__batch_size=2,
        model__neck__in_channels=TINY_ARCH['embed_dims'])
    train_log = run_command(['python', tool('train.py'), CONFIG, '--work-dir',
                             tmp_path / 'train', '--cfg-options', *options])
    assert 'not found; the backbone keeps its random initialisation' in train_log
    checkpoint = tmp_path / 'train' / f'iter_{ITERS}.pth'
    assert (tmp_path / 'train' / 'last_checkpoint').read_text().strip() == str(checkpoint)
    out_dir = tmp_path / 'predictions'
    test_log = run_command(['python', tool('test.py'), CONFIG, checkpoint, '--work-dir',
                            tmp_path / 'test', '--out', out_dir, '--cfg-options', *options])
    assert f'Load checkpoint from {checkpoint}' in test_log
    metrics = read_test_metrics(tmp_path / 'test')
    print('Semantic FPN e2e metrics:', metrics)
    for key in ('mIoU', 'aAcc', 'mAcc'):
        assert 0 <= metrics[key] <= 100, (key, metrics)
    # --out writes one label PNG per validation image.
    val_images = Path(ade20k_like['data_root'], ade20k_like['val_img_dir']).glob('*.jpg')
    assert len(list(out_dir.glob('*.png'))) == len(list(val_images)) > 0
    state = torch.load(checkpoint, map_location='cpu')
    assert state['meta']['iter'] == ITERS
