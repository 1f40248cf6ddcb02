# SPANet-B on ImageNet-1K (paper Table 1: 84.0 top-1, 75.9M parameters, 12.0 GMACs); the recipe
# of SPANet-S with stochastic depth 0.3 and test crop ratio 0.95 (resize 235, crop 224).
_base_ = './spanet_s_in1k.py'

model = dict(backbone=dict(arch='b', drop_path_rate=0.3), head=dict(in_channels=768))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=235, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
