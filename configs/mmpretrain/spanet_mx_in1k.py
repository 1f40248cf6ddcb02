# SPANet-MX on ImageNet-1K (paper Table 1: 83.8 top-1, 54.8M parameters, 9.0 GMACs); the recipe
# of SPANet-S with stochastic depth 0.3 (the release's training script).
_base_ = './spanet_s_in1k.py'

model = dict(backbone=dict(arch='mx', drop_path_rate=0.3))
