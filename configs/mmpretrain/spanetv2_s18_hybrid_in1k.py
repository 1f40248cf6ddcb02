# SPANetV2-S18-hybrid on ImageNet-1K (SPANetV2 paper: 83.9 top-1, 26,991,948 parameters, 4.2
# GMACs): the S18-pure recipe with LAMB (lr 8e-3, weight decay 0.05, as the authors' hybrid
# scripts) and stochastic depth 0.15.
_base_ = './spanetv2_s18_pure_in1k.py'

model = dict(backbone=dict(arch='s18_hybrid', drop_path_rate=0.15))

lr = 8e-3
# MMPretrain's Lamb is timm's (eps 1e-6, gradient norm clipped to 1 inside the optimizer).
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Lamb', lr=lr, weight_decay=0.05))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6 / lr,
        by_epoch=True,
        begin=0,
        end=20,
        convert_to_iter_based=True,
    ),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300),
]
