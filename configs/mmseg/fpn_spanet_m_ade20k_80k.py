# Semantic FPN with a SPANet-M backbone on ADE20K, 80k iterations (paper Table 4: 46.2 mIoU,
# 45M parameters, 57 GFLOPs at 512x512). Everything else as for SPANet-S (same stage widths).
_base_ = './fpn_spanet_s_ade20k_80k.py'

pretrained = 'checkpoints/spanet-medium.pth'

model = dict(backbone=dict(arch='m', init_cfg=dict(checkpoint=pretrained)))
