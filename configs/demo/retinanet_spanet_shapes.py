# RetinaNet with a small SPANet trained from scratch on generated shapes (COCO format).
# The main job of tools/demo.py: 128x128 images of circles, squares and triangles written by
# spanet_mm.datasets.make_coco_shapes, whose json names its three categories (ids 1-3)
# circle, square and triangle. The datasets' metainfo selects exactly these, so labels 0-2,
# the 3-class head, CocoMetric and the pictures all speak of the shapes by name.
# Total batch size 8 (1 process x 8). tools/demo.py fills in data_root and work_dir.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

classes = ('circle', 'square', 'triangle')
image_size = 128
max_iters = 600
data_root = 'work_dirs/demo/data/'

model = dict(
    backbone=dict(
        _delete_=True,
        type='SPANet',
        arch=dict(embed_dims=[48, 96, 192, 384], depths=[2, 2, 4, 2]),
        out_indices=(1, 2, 3),
        drop_path_rate=0.0,
        init_cfg=None,
    ),
    neck=dict(in_channels=[96, 192, 384], out_channels=128, start_level=0, num_outs=3),
    bbox_head=dict(
        num_classes=len(classes),
        in_channels=128,
        feat_channels=128,
        # Objects are 15-60 px: anchors of 16-100 px on strides 8, 16, 32.
        anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32]),
        # Regressing decoded boxes with a GIoU loss localises much better than L1 on
        # deltas in a schedule this short.
        reg_decoded_bbox=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
    ),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'),
    ),
]
# Loading in the main process: decoding eight 128x128 images is cheap, and a worker
# process would compete with the two compute threads for this machine's two cores.
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True, min_size=16),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# Iteration-based schedule; validation (COCO bbox mAP on the held-out split) at the end.
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters
)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min=1e-5),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters),
    # Off: at 128x128 MMDetection's pictures are too small to read, so tools/demo.py
    # renders its own, upscaled. `tools/test.py --show-dir DIR` still turns it on.
    visualization=dict(type='DetVisualizationHook', draw=False),
)
log_processor = dict(by_epoch=False, window_size=10)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
