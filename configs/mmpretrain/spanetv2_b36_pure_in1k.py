# SPANetV2-B36-pure on ImageNet-1K (SPANetV2 paper: 85.0 top-1, 24.3 GMACs; 109,557,808
# parameters as built from the authors' code, their README says 100M): the S18-pure recipe
# (AdamW, lr 4e-3) with stochastic depth 0.6.
_base_ = './spanetv2_s18_pure_in1k.py'

model = dict(backbone=dict(arch='b36_pure', drop_path_rate=0.6), head=dict(in_channels=768))
