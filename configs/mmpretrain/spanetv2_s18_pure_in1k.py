# SPANetV2-S18-pure on ImageNet-1K, 300 epochs at 224x224 (SPANetV2 paper: 83.4 top-1,
# 29,162,892 trainable parameters with the 1000-class head, 4.2 GMACs). The recipe of the
# authors' training scripts (timm): AdamW, lr 4e-3 at total batch 4096, weight decay 0.05 (none
# on norms, biases and other 1-D parameters), 20 warm-up epochs from lr 1e-6, then cosine to
# 1e-5; RandAugment (rand-m9-mstd0.5-inc1), random erasing 0.25, MixUp 0.8 / CutMix 1.0,
# label smoothing 0.1, stochastic depth 0.2; test: bicubic, crop ratio 1.0 (resize 224,
# centre crop 224), ImageNet mean and std. MMPretrain's shipped Swin/ConvNeXt ImageNet bases
# carry that pipeline, optimizer and schedule shape.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    # The authors' classifier: mean over H and W of the last stage, then its LayerNorm (with
    # bias); then their MLP head (Linear 4x, squared ReLU, LayerNorm, dropout, Linear).
    backbone=dict(
        type='SPANetV2',
        arch='s18_pure',
        out_indices=(3,),
        gap_before_final_norm=True,
        drop_path_rate=0.2,
    ),
    neck=None,
    head=dict(
        type='SPANetV2ClsHead',
        num_classes=1000,
        in_channels=512,
        dropout=0.0,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    ),
    # The release initialises every conv and linear layer this way.
    init_cfg=[dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02, bias=0.0)],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# Test: bicubic resize of the shorter side to 224 / crop ratio 1.0, centre crop 224.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

# Total batch size 4096: 32 GPUs x 128 images (batch_size is per GPU); the authors ran 4 GPUs
# with 8-32 gradient accumulation steps (optim_wrapper.accumulative_counts).
train_dataloader = dict(batch_size=128, collate_fn=dict(type='default_collate'))
val_dataloader = dict(
    batch_size=128, collate_fn=dict(type='default_collate'), dataset=dict(pipeline=test_pipeline)
)
test_dataloader = val_dataloader

lr = 4e-3
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        _delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0
    ),
)
param_scheduler = [
    # From timm's warm-up lr 1e-6 to lr over 20 epochs, updated every iteration.
    dict(
        type='LinearLR',
        start_factor=1e-6 / lr,
        by_epoch=True,
        begin=0,
        end=20,
        convert_to_iter_based=True,
    ),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)

# `tools/train.py --auto-scale-lr` scales lr by (GPUs x batch_size) / 4096.
auto_scale_lr = dict(enable=False, base_batch_size=4096)
