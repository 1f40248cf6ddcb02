"""Configs written elsewhere, inheriting the codebases' shipped configs and importing
spanet_mm through ``custom_imports``, run with MMDetection's and MMSegmentation's OWN tools
(shipped inside their packages), not this repository's. Their backbones are SPANet with no
pretrained file (``init_cfg`` unset)."""

import pickle
import textwrap
from pathlib import Path

import pytest
import torch

from helpers.commands import codebase_tool, read_test_metrics, run_command

# The checks of predictions and metrics that the tests of this repository's tools use.
from helpers.e2e_checks import check_predictions, coco_map, label_maps, seg_scores
from helpers.options import E2E_IMAGE_SIZE, TINY_ARCH

RETINANET_CONFIG = """\
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

data_root = '{data_root}/'
model = dict(
    backbone=dict(_delete_=True, type='SPANet', arch={arch}, out_indices=(1, 2, 3)),
    neck=dict(in_channels={neck_in}, start_level=0),
    # A 4-iteration model scores nothing above 0.05; keep every box to have mAP computed.
    test_cfg=dict(score_thr=0.0))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root,
                                                   pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4,
                                    weight_decay=1e-4))
train_cfg = dict(max_epochs=1, val_interval=1)
"""

SEMANTIC_FPN_CONFIG = """\
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

data_root = '{data_root}'
crop_size = ({size}, {size})
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(_delete_=True, type='SPANet', arch={arch}),
    neck=dict(in_channels={neck_in}))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=({long}, {size}), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({long}, {size}), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root,
                                                   pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(checkpoint=dict(interval=4))
"""


def write_config(directory, template, **values):
    values.update(arch=repr(TINY_ARCH), size=E2E_IMAGE_SIZE, long=4 * E2E_IMAGE_SIZE)
    path = directory / 'my_config.py'
    path.write_text(textwrap.dedent(template.format(**values)))
    return path


def train_and_test_with_own_tools(codebase, config, checkpoint_name, out, tmp_path):
    """Train ``config`` and test its ``checkpoint_name`` with ``codebase``'s shipped
    tools/train.py and tools/test.py (predictions to ``out``); the checkpoint's path and the
    test metrics."""
    # Run from the config's directory: nothing of this repository is on the path but the
    # installed spanet_mm package.
    run_command(
        ['python', codebase_tool(codebase, 'train.py'), config, '--work-dir', tmp_path / 'train'],
        cwd=tmp_path,
    )
    checkpoint = tmp_path / 'train' / checkpoint_name
    # Every planned iteration ran (4; for the detector, one epoch of 16 images, 4 a batch).
    assert torch.load(checkpoint, map_location='cpu')['meta']['iter'] == 4
    log = run_command(
        [
            'python',
            codebase_tool(codebase, 'test.py'),
            config,
            checkpoint,
            '--work-dir',
            tmp_path / 'test',
            '--out',
            out,
        ],
        cwd=tmp_path,
    )
    assert f'Load checkpoint from {checkpoint}' in log
    return checkpoint, read_test_metrics(tmp_path / 'test')


@pytest.mark.slow
def test_mmdet_own_tools_train_and_test_retinanet_config(coco_shapes, tmp_path):
    config = write_config(
        tmp_path,
        RETINANET_CONFIG,
        data_root=coco_shapes['data_root'],
        neck_in=TINY_ARCH['embed_dims'][1:],
    )
    out = tmp_path / 'predictions.pkl'
    checkpoint, metrics = train_and_test_with_own_tools(
        'mmdet', config, 'epoch_1.pth', out, tmp_path
    )
    # MMDetection's tool dumped well-formed predictions, and its metrics are theirs.
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    check_predictions(predictions, coco_shapes['val_ann'], max_per_img=100)
    got = metrics['coco/bbox_mAP'], metrics['coco/bbox_mAP_50']
    assert got == pytest.approx(coco_map(predictions, coco_shapes['val_ann'], 'bbox'), abs=6e-4), (
        metrics
    )
    state = torch.load(checkpoint, map_location='cpu')
    assert 'backbone.stages.2.1.token_mixer.proj_in.weight' in state['state_dict']


@pytest.mark.slow
def test_mmseg_own_tools_train_and_test_semantic_fpn_config(ade20k_like, tmp_path):
    config = write_config(
        tmp_path,
        SEMANTIC_FPN_CONFIG,
        data_root=ade20k_like['data_root'],
        neck_in=TINY_ARCH['embed_dims'],
    )
    out_dir = tmp_path / 'predictions'
    _, metrics = train_and_test_with_own_tools('mmseg', config, 'iter_4.pth', out_dir, tmp_path)
    # MMSegmentation's tool wrote one label PNG per validation image; scored here, they give
    # the metrics it reported.
    labels = label_maps(Path(ade20k_like['data_root'], ade20k_like['val_ann_dir']))
    predictions = label_maps(out_dir)
    assert sorted(predictions) == sorted(labels) != []
    names = sorted(labels)
    scores = seg_scores([predictions[n] for n in names], [labels[n] for n in names])
    assert scores == pytest.approx((metrics['aAcc'], metrics['mIoU']), abs=0.01), metrics
