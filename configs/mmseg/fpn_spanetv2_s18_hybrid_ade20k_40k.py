# Semantic FPN with a SPANetV2-S18-hybrid backbone on ADE20K, 40k iterations (SPANetV2 paper:
# 47.8 mIoU): the S18-pure recipe with the hybrid backbone's weights and stochastic depth 0.15.
_base_ = './fpn_spanetv2_s18_pure_ade20k_40k.py'

pretrained = 'checkpoints/spanetv2_s18_hybrid_k7_res-scale_Full-ExSPAM.pth'

model = dict(
    backbone=dict(arch='s18_hybrid', drop_path_rate=0.15, init_cfg=dict(checkpoint=pretrained))
)
