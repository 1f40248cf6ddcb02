# SPANet-BX on ImageNet-1K (paper Table 1: 99.7M parameters, 15.8 GMACs; the release reports
# 84.4 top-1); the recipe of SPANet-B with stochastic depth 0.4 (the release's training script).
_base_ = './spanet_b_in1k.py'

model = dict(backbone=dict(arch='bx', drop_path_rate=0.4))
