# Cascade Mask R-CNN + FPN with a SPANetV2-S18-hybrid backbone, COCO 2017, 3x schedule with
# multi-scale training (SPANetV2 paper: 52.8 box AP, 45.7 mask AP): the S18-pure recipe with
# the hybrid backbone's weights and stochastic depth 0.15.
_base_ = './cascade_mask_rcnn_spanetv2_s18_pure_3x.py'

pretrained = 'checkpoints/spanetv2_s18_hybrid_k7_res-scale_Full-ExSPAM.pth'

model = dict(
    backbone=dict(arch='s18_hybrid', drop_path_rate=0.15, init_cfg=dict(checkpoint=pretrained))
)
