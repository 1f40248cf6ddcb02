# Cascade Mask R-CNN + FPN with a SPANetV2-S36-hybrid backbone, COCO 2017, 3x schedule with
# multi-scale training (SPANetV2 paper: 53.8 box AP, 46.4 mask AP). The authors ship no S36
# detection config: this is their S18 recipe with S36's stochastic depth (0.3, as in their
# S36 segmentation configs), with the layer-wise lr decay (0.7) over S36's 12 layers.
_base_ = './cascade_mask_rcnn_spanetv2_s18_pure_3x.py'

# File name as in the authors' S36 segmentation configs (see docs/model_zoo.md, "Pretrained
# weights").
pretrained = 'checkpoints/spanetv2_s36_hybrid_k7_res-scale_Full-ExSPAM.pth'

model = dict(
    backbone=dict(arch='s36_hybrid', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained))
)
