# Cascade Mask R-CNN + FPN with a SPANetV2-S18-pure backbone, COCO 2017, 3x schedule with
# multi-scale training (SPANetV2 paper: 51.6 box AP, 44.7 mask AP). The authors' recipe is
# MMDetection's ConvNeXt Cascade Mask R-CNN 3x config with their backbone, so that shipped
# config is the base: it supplies the three 4-conv-1-fc box heads (SyncBN, GIoU loss), the
# mask head, the DETR-style multi-scale augmentation and the 36-epoch schedule (1000
# iterations of linear warm-up, lr x0.1 after epochs 27 and 33). Here: the backbone, the FPN
# inputs and the optimizer (AdamW, lr 2e-4, weight decay 0.05, layer-wise lr decay 0.7).
_base_ = (
    'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'  # noqa: E501
)

custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

# The authors' ImageNet-1K weights (docs/model_zoo.md, "Pretrained weights"). Put the file there
# before training.
pretrained = 'checkpoints/spanetv2_s18_pure_res-scale_Full-ExSPAM.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='SPANetV2',
        arch='s18_pure',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    # All four stages (strides 4-32) feed the FPN.
    neck=dict(in_channels=[64, 128, 320, 512]),
)

# Total batch size 16 (the authors'): 8 GPUs x 2 images (batch_size is per GPU); the authors
# ran 4 GPUs x 1 image with optim_wrapper.accumulative_counts=4. Without distributed training
# the heads' SyncBN runs as BatchNorm.
train_dataloader = dict(batch_size=2)

# Layer-wise lr decay 0.7 with layer ids counted from the backbone's depths (for S18 the
# authors' numbering, num_layers=6). The authors trained with mixed precision: add --amp to
# tools/train.py on GPUs (this config also runs on a CPU).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7, decay_type='layer_wise'),
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
)

# `tools/train.py --auto-scale-lr` scales lr by (GPUs x batch_size) / 16.
auto_scale_lr = dict(enable=False, base_batch_size=16)
