# SPANetV2-S36-hybrid on ImageNet-1K (SPANetV2 paper: 84.7 top-1, 40,669,104 parameters, 8.1
# GMACs): the S18-hybrid recipe (LAMB, lr 8e-3) with stochastic depth 0.3 and head dropout
# 0.4.
_base_ = './spanetv2_s18_hybrid_in1k.py'

model = dict(backbone=dict(arch='s36_hybrid', drop_path_rate=0.3), head=dict(dropout=0.4))
