"""LayerDecayOptimWrapperConstructor: lr scales of every SPANet and SPANetV2 arch, the
authors' numbering for S18, weight decay groups, and clear errors for bad settings."""

import math
import re

import pytest
import torch
from torch import nn

from spanet_mm.optim import LayerDecayOptimWrapperConstructor

V1_ARCHS = ['s', 'm', 'mx', 'b', 'bx']
V2_ARCHS = [
    's18_pure',
    's18_hybrid',
    's36_pure',
    's36_hybrid',
    'm36_pure',
    'm36_hybrid',
    'b36_pure',
    'b36_hybrid',
]
BASE_LR, BASE_WD = 1e-4, 0.05


class Detector(nn.Module):
    """A backbone and a stand-in for the neck and heads."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Conv2d(8, 4, 1)


def backbone_of(family, arch, **kwargs):
    if family == 'spanet':
        from spanet_mm import SPANet

        return SPANet(arch, **kwargs)
    from spanet_mm.models.spanetv2 import SPANetV2

    return SPANetV2(arch, **kwargs)


def constructor(**paramwise):
    return LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD)),
        paramwise,
    )


def groups_of(model, **paramwise):
    params = []
    constructor(**paramwise).add_params(params, model)
    return params


def scales_by_name(model, **paramwise):
    """Parameter name -> (lr / base lr, weight decay)."""
    by_param = {}
    for group in groups_of(model, **paramwise):
        for param in group['params']:
            assert id(param) not in by_param, 'a parameter is in two groups'
            by_param[id(param)] = (group['lr'] / BASE_LR, group['weight_decay'])
    return {name: by_param[id(p)] for name, p in model.named_parameters() if id(p) in by_param}


def forward_order(backbone):
    """Parameter names of the stem, stages and down-sampling layers, input side first,
    grouped per module: ``[(is_block, names), ...]`` (an entry module is one group)."""
    order = []
    for i in range(backbone.num_stages):
        entry = {id(q) for q in backbone._stage_entry(i).parameters()}
        order.append(
            (False, [f'backbone.{n}' for n, p in backbone.named_parameters() if id(p) in entry])
        )
        for j in range(backbone.depths[i]):
            order.append(
                (
                    True,
                    [
                        f'backbone.stages.{i}.{j}.{n}'
                        for n, _ in backbone.stages[i][j].named_parameters()
                    ],
                )
            )
    return order


ALL = [('spanet', a) for a in V1_ARCHS] + [('spanetv2', a) for a in V2_ARCHS]


@pytest.mark.parametrize('decay_type', ['layer_wise', 'stage_wise'])
@pytest.mark.parametrize('family,arch', ALL)
def test_scales_are_at_most_one_and_shrink_toward_the_input(family, arch, decay_type):
    torch.set_num_threads(1)
    model = Detector(backbone_of(family, arch))
    rate = 0.8
    scales = scales_by_name(model, layer_decay_rate=rate, decay_type=decay_type)
    assert set(scales) == {n for n, _ in model.named_parameters()}
    # Neck, heads and the backbone's output norms (not in the ImageNet weights): full lr.
    for name, (scale, _) in scales.items():
        if not re.match(r'backbone\.(stages|downsample|stem)', name):
            assert scale == pytest.approx(1.0), name
    order = []  # (is_block, scale), input side first
    for is_block, names in forward_order(model.backbone):
        module_scales = {scales[n][0] for n in names}
        assert len(module_scales) == 1, f'one scale per module, got {module_scales} in {names}'
        order.append((is_block, module_scales.pop()))
    stem = order[0][1]
    per_block = [scale for is_block, scale in order if is_block]
    assert all(0 < s <= 1 for s in per_block), per_block
    assert all(a <= b + 1e-12 for a, b in zip(per_block, per_block[1:])), (
        f'{family}:{arch} {decay_type}: lr scales must not grow toward the input: {per_block}'
    )
    if decay_type == 'layer_wise':
        # A down-sampling layer trains as the first blocks of its stage.
        in_order = [scale for _, scale in order]
        assert all(a <= b + 1e-12 for a, b in zip(in_order, in_order[1:])), in_order
        num_layers = sum(math.ceil(d / 3) for d in model.backbone.depths)
    else:
        # The authors' (and ConvNeXt's) stage-wise convention: stem and all down-sampling
        # layers are layer 0.
        assert {scale for is_block, scale in order if not is_block} == {stem}
        num_layers = len(model.backbone.depths)
    # The deepest block trains at rate x lr, the stem at rate^(layers + 1); layer ids come
    # from the actual depths.
    assert per_block[-1] == pytest.approx(rate)
    assert stem == pytest.approx(rate ** (num_layers + 1))
    assert stem < per_block[0]


# -- the authors' numbering, written out from their constructor (S18 only) ----------------------


def authors_layer_id(name, max_layer_id):
    """The SPANetV2 authors' layer id of a parameter (their layer_wise numbering)."""
    parts = name.split('.')
    if name.startswith('backbone.downsample_layers'):
        return {0: 0, 1: 2, 2: 3, 3: max_layer_id}[int(parts[2])]
    if name.startswith('backbone.stages'):
        stage, block = int(parts[2]), int(parts[3])
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: max_layer_id}[stage]
    return max_layer_id + 1


def authors_stage_id(name, num_layers):
    """The SPANetV2 authors' stage_wise id of a parameter."""
    if name.startswith('backbone.downsample_layers'):
        return 0
    if name.startswith('backbone.stages'):
        return int(name.split('.')[2]) + 1
    return num_layers + 1


@pytest.mark.parametrize('arch', ['s18_pure', 's18_hybrid'])
def test_s18_layer_wise_is_the_authors_numbering(arch):
    model = Detector(backbone_of('spanetv2', arch))
    scales = scales_by_name(model, layer_decay_rate=0.95, decay_type='layer_wise')
    for name, (scale, _) in scales.items():
        expected = 0.95 ** (6 + 1 - authors_layer_id(name, 6))  # their num_layers=6
        assert scale == pytest.approx(expected), name
    # A few by hand: the stem, a block of stage 3 (block 5: its second group), stage 4.
    assert scales['backbone.downsample_layers.0.conv.weight'][0] == pytest.approx(0.95**7)
    assert scales['backbone.stages.2.5.norm1.weight'][0] == pytest.approx(0.95**3)
    assert scales['backbone.stages.3.2.mlp.fc1.weight'][0] == pytest.approx(0.95)
    assert scales['neck.weight'][0] == 1.0


@pytest.mark.parametrize('arch,num_layers', [('s18_pure', 7), ('s36_hybrid', 11)])
def test_stage_wise_with_num_layers_is_the_authors_upernet_recipe(arch, num_layers):
    model = Detector(backbone_of('spanetv2', arch))
    scales = scales_by_name(
        model, layer_decay_rate=0.9, decay_type='stage_wise', num_layers=num_layers
    )
    for name, (scale, _) in scales.items():
        expected = 0.9 ** (num_layers + 1 - authors_stage_id(name, num_layers))
        assert scale == pytest.approx(expected), name
    assert scales['backbone.stages.3.0.norm1.weight'][0] == pytest.approx(0.9 ** (num_layers - 3))
    assert scales['backbone.downsample_layers.3.conv.weight'][0] == pytest.approx(
        0.9 ** (num_layers + 1)
    )


def test_s36_counts_its_own_layers_where_the_authors_exceed_one():
    model = Detector(backbone_of('spanetv2', 's36_pure'))
    scales = scales_by_name(model, layer_decay_rate=0.7, decay_type='layer_wise')
    # 3-12-18-3 blocks: layers 1 | 2-5 | 6-11 | 12, the stem is 0, the heads 13.
    assert scales['backbone.stages.1.11.mlp.fc1.weight'][0] == pytest.approx(0.7**8)
    assert scales['backbone.stages.2.17.mlp.fc1.weight'][0] == pytest.approx(0.7**2)
    assert scales['backbone.stages.3.0.mlp.fc1.weight'][0] == pytest.approx(0.7)
    assert scales['backbone.downsample_layers.0.conv.weight'][0] == pytest.approx(0.7**13)
    # The authors' numbering (num_layers=6) puts the same block past the heads.
    authors = 0.7 ** (6 + 1 - authors_layer_id('backbone.stages.2.17.mlp.fc1.weight', 6))
    assert authors > 1


# -- weight decay, frozen parameters -------------------------------------------------------------


@pytest.mark.parametrize('family,arch', [('spanet', 's'), ('spanetv2', 's18_hybrid')])
def test_no_weight_decay_on_norms_biases_and_one_dimensional_parameters(family, arch):
    model = Detector(backbone_of(family, arch))
    scales = scales_by_name(model, layer_decay_rate=0.9)
    params = dict(model.named_parameters())
    for name, (_, weight_decay) in scales.items():
        no_decay = params[name].ndim <= 1 or name.endswith('.bias')
        assert weight_decay == (0.0 if no_decay else BASE_WD), name
    norms = [n for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))]
    assert norms and all(scales[f'{n}.weight'][1] == 0 for n in norms)
    assert scales['neck.bias'][1] == 0 and scales['neck.weight'][1] == BASE_WD
    if family == 'spanetv2':
        # The spectral gains are 3-D: decayed, as in the authors' training.
        assert scales['backbone.stages.0.0.token_mixer.filter_1'][1] == BASE_WD
        assert scales['backbone.stages.2.0.res_scale1.scale'][1] == 0
        assert scales['backbone.stages.0.0.mlp.act.scale'][1] == 0


def test_frozen_parameters_are_left_out():
    model = Detector(backbone_of('spanet', 's', frozen_stages=1))
    grouped = {id(p) for g in groups_of(model, layer_decay_rate=0.9) for p in g['params']}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and not any(id(p) in grouped for p in frozen)
    assert all(id(p) in grouped for p in model.parameters() if p.requires_grad)


def test_rate_one_keeps_every_lr():
    model = Detector(backbone_of('spanet', 's'))
    assert {s for s, _ in scales_by_name(model, layer_decay_rate=1.0).values()} == {1.0}


# -- building it from each codebase's configs ----------------------------------------------------


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_each_codebase_builds_it_from_a_config(scope):
    from importlib import import_module

    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    registry = import_module(f'{scope}.registry').OPTIM_WRAPPER_CONSTRUCTORS
    assert registry.get('LayerDecayOptimWrapperConstructor') is LayerDecayOptimWrapperConstructor
    model = Detector(backbone_of('spanet', 's'))
    cfg = dict(
        type='OptimWrapper',
        constructor='LayerDecayOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
        paramwise_cfg=dict(layer_decay_rate=0.5),
    )
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, cfg)
    lrs = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    assert lrs[id(model.neck.weight)] == pytest.approx(2e-4)
    stem = model.backbone.stem.weight
    assert lrs[id(stem)] == pytest.approx(2e-4 * 0.5**11)  # 4-4-12-4 blocks: 10 layers


# -- bad settings --------------------------------------------------------------------------------


@pytest.mark.parametrize('rate', [0, -0.1, 1.5, True, '0.9', None])
def test_rate_outside_zero_one_is_an_error(rate):
    with pytest.raises(ValueError, match=r'layer_decay_rate must be in \(0, 1\], got'):
        constructor(layer_decay_rate=rate)


@pytest.mark.parametrize(
    'paramwise,message',
    [
        (dict(), r'must set layer_decay_rate'),
        (
            dict(layer_decay_rate=0.9, decay_type='block_wise'),
            r"decay_type must be one of \('layer_wise', 'stage_wise'\), got 'block_wise'",
        ),
        # The authors' key names would otherwise be silently ignored.
        (dict(decay_rate=0.9, num_layers=6), r"unknown paramwise_cfg keys \['decay_rate'\]"),
        (dict(layer_decay_rate=0.9, num_layers=0), r'num_layers must be a positive int'),
    ],
)
def test_bad_paramwise_cfg_is_named(paramwise, message):
    with pytest.raises(ValueError, match=message):
        constructor(**paramwise)


def test_num_layers_below_the_depths_is_an_error():
    model = Detector(backbone_of('spanetv2', 's36_pure'))
    with pytest.raises(ValueError, match=r'num_layers=6 is smaller than the 12 layers'):
        groups_of(model, layer_decay_rate=0.7, num_layers=6)


def test_other_backbones_and_missing_lr_are_errors():
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    with pytest.raises(TypeError, match='SPANet or SPANetV2 backbone.*has Linear'):
        groups_of(model, layer_decay_rate=0.9)
    with pytest.raises(ValueError, match='must set lr'):
        LayerDecayOptimWrapperConstructor(
            dict(type='OptimWrapper', optimizer=dict(type='AdamW')), dict(layer_decay_rate=0.9)
        )
