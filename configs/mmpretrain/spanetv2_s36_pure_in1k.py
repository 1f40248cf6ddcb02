# SPANetV2-S36-pure on ImageNet-1K (SPANetV2 paper: 84.4 top-1, 44,098,608 parameters, 8.1
# GMACs): the S18-pure recipe (AdamW, lr 4e-3) with stochastic depth 0.3.
_base_ = './spanetv2_s18_pure_in1k.py'

model = dict(backbone=dict(arch='s36_pure', drop_path_rate=0.3))
