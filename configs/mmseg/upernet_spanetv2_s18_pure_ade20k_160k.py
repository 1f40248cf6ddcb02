# UperNet with a SPANetV2-S18-pure backbone on ADE20K, 160k iterations (SPANetV2 paper: 48.7
# mIoU). MMSegmentation's shipped UperNet config supplies the UPerHead (pooling scales 1, 2,
# 3, 6), the auxiliary FCN head on stage 3 (loss weight 0.4), the ADE20K pipeline and the
# 160k loop (validation and checkpoints every 16k iterations). The authors' settings are made
# here: UPerHead with 320 channels, the backbone's widths into both heads, sliding-window test
# (512x512 windows, stride 341), AdamW lr 1e-4 with stage-wise lr decay 0.9, 1500 iterations of
# linear warm-up, then linear (power 1) decay to 0.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

# The authors' ImageNet-1K weights (docs/model_zoo.md, "Pretrained weights"). Put the file there
# before training.
pretrained = 'checkpoints/spanetv2_s18_pure_res-scale_Full-ExSPAM.pth'

crop_size = (512, 512)
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
    decode_head=dict(in_channels=[64, 128, 320, 512], channels=320),
    auxiliary_head=dict(in_channels=320),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)

# Total batch size 16 (the authors'): 4 GPUs x 4 images (batch_size is per GPU).
train_dataloader = dict(batch_size=4)

# Stage-wise lr decay 0.9 as the authors set it: with num_layers=7 stage i (0-3) trains at
# lr x 0.9^(7 - i) and the stem and down-sampling layers at lr x 0.9^8; heads at lr. The
# authors trained with mixed precision: add --amp to tools/train.py on GPUs.
max_iters = 160000
warmup_iters = 1500
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9, decay_type='stage_wise', num_layers=7),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=warmup_iters, end=max_iters, by_epoch=False),
]

# `tools/train.py --auto-scale-lr` scales lr by (GPUs x batch_size) / 16.
auto_scale_lr = dict(enable=False, base_batch_size=16)
