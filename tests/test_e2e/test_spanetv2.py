"""End to end on the CPU with the SPANetV2 configs: Mask R-CNN 3x (layer-wise lr decay) on a
generated COCO-format dataset, UperNet 160k (stage-wise lr decay, sliding-window test) on a
generated ADE20K-format dataset and the S18-hybrid ImageNet classifier (LAMB) on a generated
ImageNet-format dataset, each trained with tools/train.py and evaluated with tools/test.py.

Only data roots, image scales, schedule length, batch size, the arch (a tiny SPANetV2 with all
three token mixers) and the widths the heads take are overridden, and the pretrained file,
which tests do not have, is not loaded (``model.backbone.init_cfg=None``); everything else,
the optimizer constructor included, is the real config.
"""

import pickle
from pathlib import Path

import pytest
import torch

from helpers.commands import REPO_ROOT, run_command, run_test_tool, tool, train_scalars
from helpers.e2e_checks import (
    check_classification,
    check_predictions,
    coco_map,
    label_maps,
    seg_scores,
)
from helpers.options import (
    COCO_NUM_VAL,
    E2E_IMAGE_SIZE,
    arch_options,
    cfg_options,
    coco_data_options,
)

# Every SPANetV2 feature at a tiny size: ExSPAM in stages 1-2, MixAttention in stage 3,
# Attention in stage 4 (widths divisible by the 32-channel attention heads there), ResScale
# in stages 3-4; the filters are stored for 224 x 224 inputs as the released models' are, so
# the 64 x 64 images here use the resized-filter path of the authors' downstream training.
TINY_V2_ARCH = dict(
    embed_dims=[16, 32, 32, 64],
    depths=[1, 1, 2, 1],
    mixers=['spectral', 'spectral', 'mix_attention', 'attention'],
)
TINY_DIMS = TINY_V2_ARCH['embed_dims']
# Layers of the tiny arch for layer-wise decay: one per 3-block group of each stage.
TINY_LAYERS = 4
NO_PRETRAINED = cfg_options(model__backbone__init_cfg=None)


def saved_lr_scales(checkpoint):
    """The lr scales of the optimizer's parameter groups stored in a checkpoint."""
    state = torch.load(checkpoint, map_location='cpu')
    return sorted(
        round(group['lr_scale'], 10) for group in state['optimizer']['param_groups']
    ), state


def expected_scales(rate, exponents):
    return sorted({round(rate**k, 10) for k in exponents})


@pytest.fixture
def coco_v2_options(coco_shapes):
    """The generated COCO data in the V2 detection configs, whose training pipeline is the
    DETR-style multi-scale one: every resize made 64 x 64, crops 40-64 pixels."""
    size = (E2E_IMAGE_SIZE, E2E_IMAGE_SIZE)
    choice = 'train_dataloader__dataset__pipeline__3__transforms'
    return coco_data_options(coco_shapes) + cfg_options(
        **{
            f'{choice}__0__0__scales': [size],
            f'{choice}__1__0__scales': [size],
            f'{choice}__1__1__crop_size': (40, E2E_IMAGE_SIZE),
            f'{choice}__1__2__scales': [size],
            'val_dataloader__dataset__pipeline__1__scale': size,
            'test_dataloader__dataset__pipeline__1__scale': size,
        }
    )


@pytest.mark.slow
def test_mask_rcnn_v2_train_and_test(coco_v2_options, coco_shapes, tmp_path):
    config = REPO_ROOT / 'configs/mmdet/mask_rcnn_spanetv2_s18_pure_3x.py'
    # One epoch of 4 iterations (evaluated by tools/test.py only); every box kept (20 per
    # image) so that COCO mAP is computed on real predictions of a barely trained model.
    options = (
        coco_v2_options
        + arch_options(TINY_V2_ARCH)
        + NO_PRETRAINED
        + cfg_options(
            model__neck__in_channels=TINY_DIMS,
            train_cfg__max_epochs=1,
            train_dataloader__batch_size=4,
            model__test_cfg__rcnn__score_thr=0.0,
            model__test_cfg__rcnn__max_per_img=20,
        )
    )
    train_log = run_command(
        [
            'python',
            tool('train.py'),
            config,
            '--work-dir',
            tmp_path / 'train',
            '--no-validate',
            '--cfg-options',
            *options,
        ]
    )
    assert (
        'LayerDecayOptimWrapperConstructor: layer_wise decay 0.95 over '
        f'{TINY_LAYERS} backbone layers of SPANetV2'
    ) in train_log
    assert train_scalars(tmp_path / 'train')[-1]['epoch'] == 1
    checkpoint = tmp_path / 'train' / 'epoch_1.pth'
    scales, state = saved_lr_scales(checkpoint)
    # Stem 0.95^5 ... last stage 0.95, neck and heads 1.
    assert sorted(set(scales)) == expected_scales(0.95, range(TINY_LAYERS + 2))
    assert any(k.startswith('backbone.stages.2.1.token_mixer.') for k in state['state_dict'])

    out = tmp_path / 'predictions.pkl'
    metrics = run_test_tool(config, checkpoint, tmp_path / 'test', out, options)
    print('Mask R-CNN (SPANetV2) e2e metrics:', metrics)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == COCO_NUM_VAL
    check_predictions(predictions, coco_shapes['val_ann'], max_per_img=20)
    # The reported metrics are those of the dumped predictions (rounded to 3 decimals).
    for iou_type in ('bbox', 'segm'):
        expected = coco_map(predictions, coco_shapes['val_ann'], iou_type)
        got = metrics[f'coco/{iou_type}_mAP'], metrics[f'coco/{iou_type}_mAP_50']
        assert got == pytest.approx(expected, abs=6e-4), (iou_type, metrics)


@pytest.mark.slow
def test_upernet_v2_train_and_test(ade20k_options, ade20k_like, tmp_path):
    config = REPO_ROOT / 'configs/mmseg/upernet_spanetv2_s18_pure_ade20k_160k.py'
    iters = 4
    # Sliding-window test with 2 x 2 windows of 48 x 48 over the 64 x 64 images.
    options = (
        ade20k_options
        + arch_options(TINY_V2_ARCH)
        + NO_PRETRAINED
        + cfg_options(
            model__decode_head__in_channels=TINY_DIMS,
            model__auxiliary_head__in_channels=TINY_DIMS[2],
            model__test_cfg__crop_size=(48, 48),
            model__test_cfg__stride=(32, 32),
            train_cfg__max_iters=iters,
            train_cfg__val_interval=iters,
            default_hooks__checkpoint__interval=iters,
            train_dataloader__batch_size=2,
        )
    )
    train_log = run_command(
        [
            'python',
            tool('train.py'),
            config,
            '--work-dir',
            tmp_path / 'train',
            '--no-validate',
            '--cfg-options',
            *options,
        ]
    )
    assert 'LayerDecayOptimWrapperConstructor: stage_wise decay 0.9 over 7' in train_log
    checkpoint = tmp_path / 'train' / f'iter_{iters}.pth'
    scales, state = saved_lr_scales(checkpoint)
    # num_layers=7: stem and down-sampling 0.9^8, stage i 0.9^(7 - i), heads 1.
    assert sorted(set(scales)) == expected_scales(0.9, [8, 7, 6, 5, 4, 0])
    assert state['meta']['iter'] == iters

    out_dir = tmp_path / 'predictions'
    metrics = run_test_tool(config, checkpoint, tmp_path / 'test', out_dir, options)
    print('UperNet (SPANetV2) e2e metrics:', metrics)
    # One label PNG per validation image (the sliding-window test covers every pixel), and
    # scored independently of MMSegmentation they give the metrics it reported.
    val_labels = label_maps(Path(ade20k_like['data_root'], ade20k_like['val_ann_dir']))
    predictions = label_maps(out_dir)
    assert sorted(predictions) == sorted(val_labels) != []
    names = sorted(val_labels)
    a_acc, m_iou = seg_scores([predictions[n] for n in names], [val_labels[n] for n in names])
    assert (a_acc, m_iou) == pytest.approx((metrics['aAcc'], metrics['mIoU']), abs=0.01)


@pytest.mark.slow
def test_classifier_v2_train_and_test(imagenet_options, imagenet_like, tmp_path):
    config = REPO_ROOT / 'configs/mmpretrain/spanetv2_s18_hybrid_in1k.py'
    epochs = 1
    options = (
        imagenet_options
        + arch_options(TINY_V2_ARCH)
        + cfg_options(
            model__head__in_channels=TINY_DIMS[-1],
            train_cfg__max_epochs=epochs,
            train_dataloader__batch_size=8,
            val_dataloader__batch_size=8,
            test_dataloader__batch_size=8,
        )
    )
    run_command(
        [
            'python',
            tool('train.py'),
            config,
            '--work-dir',
            tmp_path / 'train',
            '--cfg-options',
            *options,
        ]
    )
    assert train_scalars(tmp_path / 'train')[-1]['epoch'] == epochs
    checkpoint = tmp_path / 'train' / f'epoch_{epochs}.pth'
    state = torch.load(checkpoint, map_location='cpu')
    # LAMB (its groups carry its own gradient clipping), and the authors' classifier: the
    # pooled features' LayerNorm, then the MLP head.
    assert all('max_grad_norm' in g for g in state['optimizer']['param_groups'])
    weights = state['state_dict']
    assert weights['backbone.norm3.bias'].shape == (TINY_DIMS[-1],)
    assert weights['head.fc1.weight'].shape == (4 * TINY_DIMS[-1], TINY_DIMS[-1])
    assert weights['head.fc2.weight'].shape == (1000, 4 * TINY_DIMS[-1])

    out = tmp_path / 'predictions.pkl'
    metrics = run_test_tool(config, checkpoint, tmp_path / 'test', out, options)
    print('SPANetV2 classifier e2e metrics:', metrics)
    with open(out, 'rb') as f:
        check_classification(pickle.load(f), imagenet_like['val_ann'], metrics)
