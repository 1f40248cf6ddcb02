# UperNet with a SPANetV2-S36-pure backbone on ADE20K, 160k iterations (SPANetV2 paper: 49.8
# mIoU): the S18-pure recipe with S36, stochastic depth 0.3 and, as the authors' S36 configs,
# stage-wise decay with num_layers=11 (stage i at lr x 0.9^(11 - i)).
_base_ = './upernet_spanetv2_s18_pure_ade20k_160k.py'

# File name as in the authors' S36 segmentation configs (see docs/model_zoo.md, "Pretrained
# weights").
pretrained = 'checkpoints/spanetv2_s36_pure_res-scale_Full-ExSPAM.pth'

model = dict(
    backbone=dict(arch='s36_pure', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained))
)

optim_wrapper = dict(paramwise_cfg=dict(num_layers=11))
