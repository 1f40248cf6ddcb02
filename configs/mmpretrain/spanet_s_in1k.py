# SPANet-S on ImageNet-1K, 300 epochs at 224x224 (paper Table 1: 83.1 top-1, 28,605,096
# trainable parameters with the 1000-class head, 4.6 GMACs). The recipe of the paper and the
# authors' release (timm): AdamW, lr 1e-3 at total batch 1024, weight decay 0.05 (none on
# norms, biases and ResScale), 5 warm-up epochs then cosine to 1e-5; RandAugment
# (rand-m9-mstd0.5-inc1), random erasing 0.25, MixUp 0.8 / CutMix 1.0, label smoothing 0.1,
# stochastic depth 0.1; bicubic resizing, test crop ratio 0.9 (resize 248, centre crop 224).
# MMPretrain's shipped Swin/ConvNeXt ImageNet bases carry that pipeline and optimizer.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    # SPANet's last stage goes through its GroupNorm, then global average pooling.
    backbone=dict(type='SPANet', arch='s', out_indices=(3,), drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None,
    ),
    # The release (timm) initialises every conv and linear layer this way.
    init_cfg=[
        dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02, bias=0.0),
        dict(type='Constant', layer=['GroupNorm'], val=1.0, bias=0.0),
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# Test: bicubic resize of the shorter side to floor(224 / crop ratio), centre crop 224.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

# Total batch size 1024: 8 GPUs x 128 images (batch_size is per GPU).
train_dataloader = dict(batch_size=128, collate_fn=dict(type='default_collate'))
val_dataloader = dict(
    batch_size=128, collate_fn=dict(type='default_collate'), dataset=dict(pipeline=test_pipeline)
)
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True,
    ),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)

# `tools/train.py --auto-scale-lr` scales lr by (GPUs x batch_size) / 1024.
auto_scale_lr = dict(enable=False, base_batch_size=1024)
