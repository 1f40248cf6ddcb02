# SPANetV2-M36-hybrid on ImageNet-1K (SPANetV2 paper: 85.3 top-1, 58,334,896 parameters, 13.6
# GMACs): the S18-hybrid recipe (LAMB, lr 8e-3) with stochastic depth 0.4 and head dropout
# 0.4.
_base_ = './spanetv2_s18_hybrid_in1k.py'

model = dict(
    backbone=dict(arch='m36_hybrid', drop_path_rate=0.4), head=dict(in_channels=576, dropout=0.4)
)
