# RetinaNet + FPN with a SPANet-M backbone, COCO 2017, 1x schedule (paper Table 3: 44.0 box AP,
# 51M parameters). Everything else as for SPANet-S (same stage widths, so same FPN inputs).
_base_ = './retinanet_spanet_s_1x.py'

pretrained = 'checkpoints/spanet-medium.pth'

model = dict(backbone=dict(arch='m', init_cfg=dict(checkpoint=pretrained)))
