# Cascade Mask R-CNN + FPN with a SPANetV2-S36-pure backbone, COCO 2017, 3x schedule with
# multi-scale training (SPANetV2 paper: 53.1 box AP, 45.9 mask AP). The authors ship no S36
# detection config: this is their S18 recipe with S36's stochastic depth (0.3, as in their
# S36 segmentation configs). The layer-wise lr decay (0.7) numbers S36's layers from its
# depths (12 layers); the authors' constructor, written for S18, gives S36's deeper blocks lr
# scales above 1.
_base_ = './cascade_mask_rcnn_spanetv2_s18_pure_3x.py'

# File name as in the authors' S36 segmentation configs (see docs/model_zoo.md, "Pretrained
# weights").
pretrained = 'checkpoints/spanetv2_s36_pure_res-scale_Full-ExSPAM.pth'

model = dict(
    backbone=dict(arch='s36_pure', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained))
)
