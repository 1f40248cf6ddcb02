"""The SPANetV2 configs: they build in their codebases, their models have exactly the sizes of
the authors' models, and their recipes (schedules, optimizers, layer decay, batch sizes,
stochastic depth, pretrained files) are the authors'.

Sizes: the classifiers are the authors' ImageNet models built from their code; the dense
models are their shipped configs built in this stack, less the unused ImageNet ``norm`` and
``head`` their dense backbones carry (3,104,744 parameters for S18/S36). The authors ship
no S36 Cascade Mask R-CNN config: its size is their S18 one plus the S36 - S18 backbone
difference of their classifiers (40,993,864 - 26,058,148 pure, 37,564,360 - 23,887,204 hybrid).
"""

from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

from helpers.commands import REPO_ROOT
from helpers.model_sizes import SPANETV2_CLASSIFIER_PARAMS, SPANETV2_WITHOUT_NORM_AND_HEAD

CONFIG_DIR = REPO_ROOT / 'configs'

S36_MINUS_S18 = {
    kind: SPANETV2_WITHOUT_NORM_AND_HEAD[f's36_{kind}']
    - SPANETV2_WITHOUT_NORM_AND_HEAD[f's18_{kind}']
    for kind in ('pure', 'hybrid')
}

# config -> exact trainable parameters
SIZES = {
    'mmdet/mask_rcnn_spanetv2_s18_pure_3x.py': 46_226_580,
    'mmdet/mask_rcnn_spanetv2_s18_hybrid_3x.py': 44_055_636,
    'mmdet/cascade_mask_rcnn_spanetv2_s18_pure_3x.py': 84_061_782,
    'mmdet/cascade_mask_rcnn_spanetv2_s18_hybrid_3x.py': 81_890_838,
    'mmdet/cascade_mask_rcnn_spanetv2_s36_pure_3x.py': 84_061_782 + S36_MINUS_S18['pure'],
    'mmdet/cascade_mask_rcnn_spanetv2_s36_hybrid_3x.py': 81_890_838 + S36_MINUS_S18['hybrid'],
    'mmseg/fpn_spanetv2_s18_pure_ade20k_40k.py': 30_325_818,
    'mmseg/fpn_spanetv2_s18_hybrid_ade20k_40k.py': 28_154_874,
    'mmseg/fpn_spanetv2_s36_pure_ade20k_40k.py': 45_261_534,
    'mmseg/fpn_spanetv2_s36_hybrid_ade20k_40k.py': 41_832_030,
    'mmseg/upernet_spanetv2_s18_pure_ade20k_160k.py': 39_322_704,
    'mmseg/upernet_spanetv2_s18_hybrid_ade20k_160k.py': 37_151_760,
    'mmseg/upernet_spanetv2_s36_pure_ade20k_160k.py': 54_258_420,
    'mmseg/upernet_spanetv2_s36_hybrid_ade20k_160k.py': 50_828_916,
    **{
        f'mmpretrain/spanetv2_{arch}_in1k.py': params
        for arch, params in SPANETV2_CLASSIFIER_PARAMS.items()
    },
}
V2_CONFIGS = set(SIZES)
DENSE = sorted(n for n in SIZES if not n.startswith('mmpretrain/'))
DETECTION = [n for n in DENSE if n.startswith('mmdet/')]
FPN = [n for n in DENSE if '/fpn_' in n]
UPERNET = [n for n in DENSE if '/upernet_' in n]
CLASSIFIERS = sorted(n for n in SIZES if n.startswith('mmpretrain/'))

# Stochastic depth of the downstream backbones (the authors' configs; S36 as their S36
# segmentation configs, also for the Cascade Mask R-CNN they ship no config for).
DENSE_DROP_PATH = {'s18_pure': 0.2, 's18_hybrid': 0.15, 's36_pure': 0.3, 's36_hybrid': 0.3}
# The published ImageNet weights: S18 names from the authors' notebooks, S36 names from their
# segmentation configs.
PRETRAINED = {
    's18_pure': 'spanetv2_s18_pure_res-scale_Full-ExSPAM.pth',
    's18_hybrid': 'spanetv2_s18_hybrid_k7_res-scale_Full-ExSPAM.pth',
    's36_pure': 'spanetv2_s36_pure_res-scale_Full-ExSPAM.pth',
    's36_hybrid': 'spanetv2_s36_hybrid_k7_res-scale_Full-ExSPAM.pth',
}
WIDTHS = {'s': [64, 128, 320, 512], 'm': [96, 192, 384, 576], 'b': [128, 256, 512, 768]}


def load(name):
    return Config.fromfile(str(CONFIG_DIR / name))


def arch_of(name):
    """'s18_pure' from '.../cascade_mask_rcnn_spanetv2_s18_pure_3x.py'."""
    stem = Path(name).stem.split('spanetv2_')[1]
    size, kind = stem.split('_')[:2]
    return f'{size}_{kind}'


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_every_v2_config_is_listed():
    found = {str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.glob('*/*spanetv2*.py')}
    assert found == V2_CONFIGS


@pytest.mark.parametrize('name', sorted(SIZES))
def test_model_builds_with_the_exact_size(name):
    import torch
    from mmengine.optim import build_optim_wrapper

    from spanet_mm.codebases import build_model, codebase_of, default_scope

    torch.set_num_threads(1)
    cfg = load(name)
    model = build_model(cfg)
    assert type(model.backbone).__name__ == 'SPANetV2'
    assert trainable(model) == SIZES[name], f'{name}: {trainable(model):,} parameters'
    if cfg.optim_wrapper.get('constructor') == 'LayerDecayOptimWrapperConstructor':
        # The config's optimizer builds in its codebase: every backbone layer at most the
        # heads' lr, the heads at lr.
        with default_scope(codebase_of(cfg)):
            wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        base_lr = cfg.optim_wrapper.optimizer.lr
        lrs = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
        assert len(lrs) == sum(1 for p in model.parameters() if p.requires_grad)
        backbone = {id(p) for p in model.backbone.stages.parameters()}
        assert max(lrs[i] for i in backbone) < base_lr
        assert all(
            lr == pytest.approx(base_lr)
            for i, lr in lrs.items()
            if i not in {id(p) for p in model.backbone.parameters()}
        )


@pytest.mark.parametrize('name', DENSE)
def test_dense_backbone_weights_and_widths(name):
    cfg = load(name)
    arch = arch_of(name)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('SPANetV2', arch)
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.drop_path_rate == DENSE_DROP_PATH[arch]
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'checkpoints/{PRETRAINED[arch]}'
    )
    assert cfg.custom_imports == dict(imports=['spanet_mm'], allow_failed_imports=False)
    # The backbone carries no unused parameters (the authors needed this flag).
    assert not cfg.get('find_unused_parameters', False)
    widths = WIDTHS[arch[0]]
    if name in UPERNET:
        assert cfg.model.decode_head.in_channels == widths
        assert cfg.model.auxiliary_head.in_channels == widths[2]
        assert cfg.model.auxiliary_head.in_index == 2
    else:
        assert cfg.model.neck.in_channels == widths


@pytest.mark.parametrize('name', DETECTION)
def test_detection_recipe_is_3x_multiscale_adamw_with_layer_decay(name):
    cfg = load(name)
    cascade = 'cascade' in name
    assert cfg.train_cfg.max_epochs == 36
    warmup, step = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.end) == ('LinearLR', False, 1000)
    assert (step.type, step.milestones, step.gamma) == ('MultiStepLR', [27, 33], 0.1)
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=2e-4 if cascade else 1e-4, betas=(0.9, 0.999), weight_decay=0.05
    )
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        layer_decay_rate=0.7 if cascade else 0.95, decay_type='layer_wise'
    )
    assert cfg.auto_scale_lr.base_batch_size == 16 == 8 * cfg.train_dataloader.batch_size
    # DETR-style multi-scale training: shorter side 480-800 (max 1333), or resize + crop.
    choice = cfg.train_dataloader.dataset.pipeline[3]
    assert choice.type == 'RandomChoice'
    scales = choice.transforms[0][0].scales
    assert scales[0] == (480, 1333) and scales[-1] == (800, 1333)
    assert choice.transforms[1][1].crop_size == (384, 600)
    if cascade:
        for head in cfg.model.roi_head.bbox_head:
            assert (head.type, head.num_shared_convs, head.num_shared_fcs) == (
                'ConvFCBBoxHead',
                4,
                1,
            )
            assert head.loss_bbox.type == 'GIoULoss' and head.reg_decoded_bbox


@pytest.mark.parametrize('name', FPN)
def test_semantic_fpn_recipe_is_40k_poly_adamw(name):
    cfg = load(name)
    assert cfg.train_cfg.max_iters == 40000
    (poly,) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.end, poly.eta_min) == ('PolyLR', 0.9, 40000, 0)
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=1e-4)
    assert 'constructor' not in cfg.optim_wrapper
    assert cfg.auto_scale_lr.base_batch_size == 32 == 4 * cfg.train_dataloader.batch_size
    assert cfg.model.decode_head.channels == 128
    assert cfg.model.neck.out_channels == 256
    steps = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert steps[1:3] == ['Resize', 'ResizeToMultiple']
    assert cfg.test_dataloader.dataset.pipeline[2].size_divisor == 32


@pytest.mark.parametrize('name', UPERNET)
def test_upernet_recipe_is_160k_with_stage_wise_decay(name):
    cfg = load(name)
    assert cfg.train_cfg.max_iters == 160000
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-6, 1500)
    assert (poly.type, poly.power, poly.begin, poly.end) == ('PolyLR', 1.0, 1500, 160000)
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05
    )
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    # The authors' num_layers: 7 for S18, 11 for S36.
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        layer_decay_rate=0.9, decay_type='stage_wise', num_layers=7 if 's18' in name else 11
    )
    assert cfg.auto_scale_lr.base_batch_size == 16 == 4 * cfg.train_dataloader.batch_size
    assert cfg.model.decode_head.channels == 320
    assert cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))


# arch -> (drop path, optimizer, head dropout, clip_grad max norm)
IMAGENET_RECIPE = {
    's18_pure': (0.2, 'AdamW', 0.0, None),
    's18_hybrid': (0.15, 'Lamb', 0.0, None),
    's36_pure': (0.3, 'AdamW', 0.0, None),
    's36_hybrid': (0.3, 'Lamb', 0.4, None),
    'm36_pure': (0.4, 'AdamW', 0.0, None),
    'm36_hybrid': (0.4, 'Lamb', 0.4, None),
    'b36_pure': (0.6, 'AdamW', 0.0, None),
    'b36_hybrid': (0.6, 'Lamb', 0.5, 1.0),
}


@pytest.mark.parametrize('arch', sorted(IMAGENET_RECIPE))
def test_imagenet_recipe(arch):
    cfg = load(f'mmpretrain/spanetv2_{arch}_in1k.py')
    drop_path, optimizer, head_dropout, max_norm = IMAGENET_RECIPE[arch]
    backbone, head = cfg.model.backbone, cfg.model.head
    assert (backbone.type, backbone.arch, backbone.out_indices) == ('SPANetV2', arch, (3,))
    assert backbone.gap_before_final_norm is True and cfg.model.neck is None
    assert backbone.drop_path_rate == drop_path
    assert (head.type, head.num_classes, head.in_channels) == (
        'SPANetV2ClsHead',
        1000,
        WIDTHS[arch[0]][-1],
    )
    assert head.dropout == head_dropout
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    opt = cfg.optim_wrapper.optimizer
    lr = 4e-3 if optimizer == 'AdamW' else 8e-3
    assert (opt.type, opt.lr, opt.weight_decay) == (optimizer, lr, 0.05)
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0
    )
    clip = cfg.optim_wrapper.get('clip_grad')
    assert (clip.max_norm if clip else None) == max_norm
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.auto_scale_lr.base_batch_size == 4096 == 32 * cfg.train_dataloader.batch_size
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.by_epoch) == ('LinearLR', 20, True)
    assert warmup.start_factor * lr == pytest.approx(1e-6)  # timm's warm-up lr
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == (
        'CosineAnnealingLR',
        20,
        300,
        1e-5,
    )
    assert cfg.model.train_cfg.augments == [
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandAugment'].magnitude_level == 9
    assert train['RandomErasing'].erase_prob == 0.25
    assert cfg.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert cfg.data_preprocessor.std == [58.395, 57.12, 57.375]
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        resize, crop = loader.dataset.pipeline[1:3]
        # Crop ratio 1.0: the shorter side to 224, then the centre 224 x 224.
        assert (resize.type, resize.scale, resize.interpolation) == ('ResizeEdge', 224, 'bicubic')
        assert crop.crop_size == 224


def test_metafiles_list_every_v2_config_with_its_size():
    root = CONFIG_DIR.parent
    listed = {}
    for codebase in ('mmdet', 'mmseg', 'mmpretrain'):
        for model in yaml.safe_load((CONFIG_DIR / codebase / 'metafile.yml').read_text())['Models']:
            listed[model['Config']] = model
    for name, size in SIZES.items():
        entry = listed.get(f'configs/{name}')
        assert entry is not None, f'configs/{name} is not in its metafile'
        assert entry['Metadata']['Parameters'] == size, name
        assert (root / entry['Config']).is_file()
