# Mask R-CNN + FPN with a SPANet-S backbone, COCO 2017, 1x schedule (paper Table 3: 44.7 box AP,
# 40.6 mask AP, 48M parameters). MMDetection's shipped Mask R-CNN config supplies the heads,
# data pipeline (1333x800, random flip) and the 1x schedule (12 epochs, lr x0.1 after 8 and
# 11, 500 iterations of linear warm-up); only the backbone, neck inputs and optimizer change.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)

# The authors' ImageNet-1K weights (docs/model_zoo.md, "Pretrained weights"). Without the file
# training stops with an error; to train from scratch on purpose add `--cfg-options
# model.backbone.init_cfg=None`.
pretrained = 'checkpoints/spanet-small.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='SPANet',
        arch='s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]),
)

# Total batch size 8 (the paper's): 4 GPUs x 2 images (train_dataloader.batch_size is per GPU).
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))

# `tools/train.py --auto-scale-lr` scales lr by (GPUs x batch_size) / 8.
auto_scale_lr = dict(enable=False, base_batch_size=8)
