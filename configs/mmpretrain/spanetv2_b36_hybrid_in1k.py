# SPANetV2-B36-hybrid on ImageNet-1K (SPANetV2 paper: 85.6 top-1, 101,802,544 parameters, 23.9
# GMACs): the S18-hybrid recipe (LAMB, lr 8e-3) with stochastic depth 0.6, head dropout 0.5
# and, as the authors' B36-hybrid script, the gradient norm clipped to 1.0.
_base_ = './spanetv2_s18_hybrid_in1k.py'

model = dict(
    backbone=dict(arch='b36_hybrid', drop_path_rate=0.6), head=dict(in_channels=768, dropout=0.5)
)

optim_wrapper = dict(clip_grad=dict(max_norm=1.0, norm_type=2))
