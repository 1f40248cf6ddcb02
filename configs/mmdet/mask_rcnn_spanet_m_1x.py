# Mask R-CNN + FPN with a SPANet-M backbone, COCO 2017, 1x schedule (paper Table 3: 45.2 box AP,
# 41.0 mask AP, 61M parameters). Everything else as for SPANet-S (same stage widths).
_base_ = './mask_rcnn_spanet_s_1x.py'

pretrained = 'checkpoints/spanet-medium.pth'

model = dict(backbone=dict(arch='m', init_cfg=dict(checkpoint=pretrained)))
