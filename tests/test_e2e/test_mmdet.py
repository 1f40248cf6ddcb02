"""End to end on the CPU: the MMDetection configs trained with tools/train.py on a generated
COCO-format shapes dataset and evaluated with tools/test.py (COCO bbox and segm mAP).

Only data roots, image scale, epochs, batch size and the arch size are overridden, the
pretrained file is opted out of (``init_cfg=None``) and, for evaluation, the score threshold
(see ``schedule_options``); everything else is the real config.

Four iterations teach a detector next to nothing (its mAP is about 0; tests/test_e2e/test_mmseg.py
is the one that checks learning), so the checks here are that the predictions are well formed
and in the original images' coordinates (testing at twice the images' size, so that the
boxes and masks must be mapped back), and that the COCO metrics are those of the dumped
predictions.
"""

import pickle

import pytest
import torch

from helpers.commands import REPO_ROOT, run_command, run_test_tool, tool, train_scalars
from helpers.e2e_checks import check_predictions, coco_map
from helpers.options import COCO_NUM_VAL, E2E_IMAGE_SIZE, TINY_ARCH, arch_options, cfg_options

EPOCHS = 1
TINY_DIMS = TINY_ARCH['embed_dims']  # RetinaNet's FPN takes stages 2-4 of them


def schedule_options(score_thr_key):
    """One epoch of 4 iterations (16 images, batch 4), evaluated at its end.

    A detector trained for 4 iterations scores no box above the configs' test threshold
    (0.05), and COCO evaluation of zero detections reports no metric at all; so every box
    is kept (threshold 0) to have the real metric computed on real predictions.
    """
    return cfg_options(
        train_cfg__max_epochs=EPOCHS,
        train_cfg__val_interval=EPOCHS,
        train_dataloader__batch_size=4,
        **{score_thr_key: 0.0},
    )


def train_and_test(
    config, neck_in_channels, coco_options, coco_shapes, work_dir, iou_types, score_thr_key
):
    options = (
        coco_options
        + schedule_options(score_thr_key)
        + arch_options()
        + cfg_options(model__neck__in_channels=neck_in_channels, model__backbone__init_cfg=None)
    )
    run_command(
        [
            'python',
            tool('train.py'),
            REPO_ROOT / config,
            '--work-dir',
            work_dir / 'train',
            '--cfg-options',
            *options,
        ]
    )
    records = train_scalars(work_dir / 'train')
    assert records and records[-1]['epoch'] == EPOCHS

    checkpoint = work_dir / 'train' / f'epoch_{EPOCHS}.pth'
    out = work_dir / 'predictions.pkl'
    test_scale = (2 * E2E_IMAGE_SIZE, 2 * E2E_IMAGE_SIZE)
    metrics = run_test_tool(
        REPO_ROOT / config,
        checkpoint,
        work_dir / 'test',
        out,
        options + cfg_options(test_dataloader__dataset__pipeline__1__scale=test_scale),
    )
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == COCO_NUM_VAL  # one per held-out image
    check_predictions(predictions, coco_shapes['val_ann'], max_per_img=100, test_shape=test_scale)
    # The reported metrics are those of the dumped predictions (MMDetection rounds them
    # to 3 decimals).
    for iou_type in iou_types:
        expected = coco_map(predictions, coco_shapes['val_ann'], iou_type)
        got = metrics[f'coco/{iou_type}_mAP'], metrics[f'coco/{iou_type}_mAP_50']
        assert got == pytest.approx(expected, abs=6e-4), (iou_type, metrics)
    # The checkpoint reloads under torch's weights_only default (spanet_mm's allow-list).
    state = torch.load(checkpoint, map_location='cpu')
    assert state['meta']['epoch'] == EPOCHS
    assert any(k.startswith('backbone.stages.') for k in state['state_dict'])
    return metrics


@pytest.mark.slow
def test_retinanet_train_and_test(coco_options, coco_shapes, tmp_path):
    metrics = train_and_test(
        'configs/mmdet/retinanet_spanet_s_1x.py',
        TINY_DIMS[1:],
        coco_options,
        coco_shapes,
        tmp_path,
        ['bbox'],
        'model__test_cfg__score_thr',
    )
    print('RetinaNet e2e metrics:', metrics)


@pytest.mark.slow
def test_mask_rcnn_train_and_test(coco_options, coco_shapes, tmp_path):
    metrics = train_and_test(
        'configs/mmdet/mask_rcnn_spanet_s_1x.py',
        TINY_DIMS,
        coco_options,
        coco_shapes,
        tmp_path,
        ['bbox', 'segm'],
        'model__test_cfg__rcnn__score_thr',
    )
    print('Mask R-CNN e2e metrics:', metrics)
