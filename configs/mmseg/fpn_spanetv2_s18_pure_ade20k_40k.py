# Semantic FPN with a SPANetV2-S18-pure backbone on ADE20K, 40k iterations (SPANetV2 paper:
# 46.7 mIoU). MMSegmentation's shipped Semantic FPN config supplies the FPN neck (256
# channels), the FPN head (128 channels) and the ADE20K pipeline (random resize 0.5-2.0 of
# 2048x512, 512x512 crops, flip, photometric distortion; test at shorter side 512); the
# authors' 40k AdamW schedule, batch size and test-time resizing to a multiple of 32 are set
# here.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

# The authors' ImageNet-1K weights (docs/model_zoo.md, "Pretrained weights"). Put the file there
# before training.
pretrained = 'checkpoints/spanetv2_s18_pure_res-scale_Full-ExSPAM.pth'

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SPANetV2',
        arch='s18_pure',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]),
)

# Total batch size 32 (the authors'): 4 GPUs x 8 images (batch_size is per GPU).
train_dataloader = dict(batch_size=8)

# The authors' test pipeline: shorter side 512, then both sides to a multiple of 32.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW, lr 2e-4, weight decay 1e-4, polynomial decay with power 0.9 over 40k iterations. The
# authors trained with mixed precision: add --amp to tools/train.py on GPUs.
max_iters = 40000
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=None,
)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))

# `tools/train.py --auto-scale-lr` scales lr by (GPUs x batch_size) / 32.
auto_scale_lr = dict(enable=False, base_batch_size=32)
