# SPANetV2-M36-pure on ImageNet-1K (SPANetV2 paper: 84.9 top-1, 13.7 GMACs; 62,934,832
# parameters as built from the authors' code, their README says 61M): the S18-pure recipe
# (AdamW, lr 4e-3) with stochastic depth 0.4.
_base_ = './spanetv2_s18_pure_in1k.py'

model = dict(backbone=dict(arch='m36_pure', drop_path_rate=0.4), head=dict(in_channels=576))
