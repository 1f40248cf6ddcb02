# SPANet-M on ImageNet-1K (paper Table 1: 83.5 top-1, 41.7M parameters, 6.8 GMACs); the recipe
# of SPANet-S with stochastic depth 0.2.
_base_ = './spanet_s_in1k.py'

model = dict(backbone=dict(arch='m', drop_path_rate=0.2))
