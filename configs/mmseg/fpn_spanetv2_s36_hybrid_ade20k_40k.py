# Semantic FPN with a SPANetV2-S36-hybrid backbone on ADE20K, 40k iterations (SPANetV2 paper:
# 48.6 mIoU): the S18-pure recipe with S36-hybrid and stochastic depth 0.3.
_base_ = './fpn_spanetv2_s18_pure_ade20k_40k.py'

# File name as in the authors' S36 segmentation configs (see docs/model_zoo.md, "Pretrained
# weights").
pretrained = 'checkpoints/spanetv2_s36_hybrid_k7_res-scale_Full-ExSPAM.pth'

model = dict(
    backbone=dict(arch='s36_hybrid', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained))
)
