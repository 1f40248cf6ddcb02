"""End to end on the CPU: the MMDetection configs trained with tools/train.py on a generated
COCO-format shapes dataset and evaluated with tools/test.py (COCO bbox and segm mAP).

Only data roots, image scale, epochs, batch size and the arch size are overridden, and, for
evaluation, the score threshold (see ``schedule_options``); everything else is the real config.
"""
import pickle

import pytest
import torch
from conftest import (COCO_NUM_VAL, REPO_ROOT, TINY_ARCH, arch_options, cfg_options,
                      read_test_metrics, run_command, tool, train_scalars)

EPOCHS = 1
TINY_DIMS = TINY_ARCH['embed_dims']  # RetinaNet's FPN takes stages 2-4 of them


def schedule_options(score_thr_key):
    """One epoch of 4 iterations (16 images, batch 4), evaluated at its end.

    A detector trained for 4 iterations scores no box above the configs' test threshold
    (0.05), and COCO evaluation of zero detections reports no metric at all; so every box
    is kept (threshold 0) to have the real metric computed on real predictions.
    """
    return cfg_options(train_cfg__max_epochs=EPOCHS, train_cfg__val_interval=EPOCHS,
                       train_dataloader__batch_size=4, **{score_thr_key: 0.0})


def train_and_test(config, neck_in_channels, coco_options, work_dir, metric_keys,
                   score_thr_key):
    options = (coco_options + schedule_options(score_thr_key) + arch_options() +
               cfg_options(model__neck__in_channels=neck_in_channels))
    train_log = run_command(['python', tool('train.py'), REPO_ROOT / config, '--work-dir',
                             work_dir / 'train', '--cfg-options', *options])
    # The pretrained file is not there: training goes on from random weights, with a warning.
    assert 'not found; the backbone keeps its random initialisation' in train_log
    records = train_scalars(work_dir / 'train')
    assert records and records[-1]['epoch'] == EPOCHS

    checkpoint = work_dir / 'train' / f'epoch_{EPOCHS}.pth'
    out = work_dir / 'predictions.pkl'
    test_log = run_command(['python', tool('test.py'), REPO_ROOT / config, checkpoint,
                            '--work-dir', work_dir / 'test', '--out', out,
                            '--cfg-options', *options])
    assert f'Load checkpoint from {checkpoint}' in test_log
    metrics = read_test_metrics(work_dir / 'test')
    for key in metric_keys:
        assert 0 <= metrics[key] <= 1, (key, metrics)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == COCO_NUM_VAL  # one per held-out image
    # The checkpoint reloads under torch's weights_only default (spanet_mm's allow-list).
    state = torch.load(checkpoint, map_location='cpu')
    assert state['meta']['epoch'] == EPOCHS
    assert any(k.startswith('backbone.stages.') for k in state['state_dict'])
    return metrics


@pytest.mark.slow
def test_retinanet_train_and_test(coco_options, tmp_path):
    metrics = train_and_test('configs/mmdet/retinanet_spanet_s_1x.py', TINY_DIMS[1:],
                             coco_options, tmp_path, ['coco/bbox_mAP', 'coco/bbox_mAP_50'],
                             'model__test_cfg__score_thr')
    print('RetinaNet e2e metrics:', metrics)


@pytest.mark.slow
def test_mask_rcnn_train_and_test(coco_options, tmp_path):
    metrics = train_and_test('configs/mmdet/mask_rcnn_spanet_s_1x.py', TINY_DIMS,
                             coco_options, tmp_path,
                             ['coco/bbox_mAP', 'coco/segm_mAP', 'coco/segm_mAP_50'],
                             'model__test_cfg__rcnn__score_thr')
    print('Mask R-CNN e2e metrics:', metrics)
