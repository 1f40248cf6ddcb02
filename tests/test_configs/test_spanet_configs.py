"""The configs of the paper's experiments: they build, their models have the paper's sizes,
and their schedules, batch sizes and pretrained paths are the paper's."""

import pytest
from mmengine.config import Config

from spanet_mm import codebases

from helpers.commands import REPO_ROOT
from helpers.model_sizes import SPANET_CLASSIFIER_PARAMS

CONFIG_DIR = REPO_ROOT / 'configs'

# config -> (the paper's size in millions, as it rounds them)
DENSE = {
    'mmdet/retinanet_spanet_s_1x.py': 38,
    'mmdet/retinanet_spanet_m_1x.py': 51,
    'mmdet/mask_rcnn_spanet_s_1x.py': 48,
    'mmdet/mask_rcnn_spanet_m_1x.py': 61,
    'mmseg/fpn_spanet_s_ade20k_80k.py': 32,
    'mmseg/fpn_spanet_m_ade20k_80k.py': 45,
}
# ImageNet classifiers: exact trainable parameters (the release's model, 1000 classes).
CLASSIFIERS = {
    f'mmpretrain/spanet_{arch}_in1k.py': params for arch, params in SPANET_CLASSIFIER_PARAMS.items()
}
PRETRAINED = {'s': 'checkpoints/spanet-small.pth', 'm': 'checkpoints/spanet-medium.pth'}


def load(name):
    return Config.fromfile(str(CONFIG_DIR / name))


def build_model(cfg):
    """Build the config's model in its codebase's scope."""
    return codebases.build_model(cfg)


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_every_config_is_tested():
    # SPANetV2's configs are tested in test_spanetv2_configs.py.
    from test_configs.test_spanetv2_configs import V2_CONFIGS

    found = {
        str(p.relative_to(CONFIG_DIR))
        for codebase in ('mmdet', 'mmseg', 'mmpretrain')
        for p in (CONFIG_DIR / codebase).glob('*.py')
    }
    assert found == set(DENSE) | set(CLASSIFIERS) | V2_CONFIGS


@pytest.mark.parametrize('name', sorted(DENSE))
def test_dense_model_size_matches_paper(name):
    cfg = load(name)
    millions = trainable(build_model(cfg)) / 1e6
    assert round(millions) == DENSE[name], f'{name}: {millions:.2f}M'


@pytest.mark.parametrize('name', sorted(CLASSIFIERS))
def test_classifier_size_is_exact(name):
    assert trainable(build_model(load(name))) == CLASSIFIERS[name]


@pytest.mark.parametrize('name', sorted(DENSE))
def test_dense_configs_load_authors_weights(name):
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'SPANet'
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=PRETRAINED[backbone.arch])
    assert cfg.custom_imports == dict(imports=['spanet_mm'], allow_failed_imports=False)


@pytest.mark.parametrize('name', [n for n in DENSE if n.startswith('mmdet/')])
def test_detection_schedule_is_1x_adamw(name):
    cfg = load(name)
    assert cfg.train_cfg.max_epochs == 12
    step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR']
    assert len(step) == 1 and step[0].milestones == [8, 11] and step[0].gamma == 0.1
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    assert cfg.auto_scale_lr.base_batch_size == 8 == 4 * cfg.train_dataloader.batch_size
    assert cfg.train_dataloader.dataset.pipeline[2].scale == (1333, 800)
    assert cfg.train_dataloader.dataset.pipeline[3].type == 'RandomFlip'


@pytest.mark.parametrize('arch', ['s', 'm'])
def test_retinanet_feeds_stages_2_to_4_to_fpn(arch):
    cfg = load(f'mmdet/retinanet_spanet_{arch}_1x.py')
    assert cfg.model.backbone.out_indices == (1, 2, 3)
    assert cfg.model.neck.in_channels == [128, 320, 512]
    assert cfg.model.neck.start_level == 0
    assert cfg.model.neck.add_extra_convs == 'on_input'
    assert cfg.model.neck.num_outs == 5
    model = build_model(cfg)
    import torch

    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 128, 128))
    # Strides 8 to 128: P3-P7.
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]


@pytest.mark.parametrize('arch', ['s', 'm'])
def test_mask_rcnn_uses_all_four_stages(arch):
    cfg = load(f'mmdet/mask_rcnn_spanet_{arch}_1x.py')
    assert cfg.model.backbone.out_indices == (0, 1, 2, 3)
    assert cfg.model.neck.in_channels == [64, 128, 320, 512]


@pytest.mark.parametrize('arch', ['s', 'm'])
def test_segmentation_schedule_is_80k_poly_adamw(arch):
    cfg = load(f'mmseg/fpn_spanet_{arch}_ade20k_80k.py')
    assert cfg.train_cfg.max_iters == 80000
    (poly,) = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.power == 0.9 and poly.end == 80000
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.auto_scale_lr.base_batch_size == 16 == 4 * cfg.train_dataloader.batch_size
    assert cfg.crop_size == (512, 512)
    assert cfg.model.data_preprocessor.size == (512, 512)
    test_resize = cfg.test_dataloader.dataset.pipeline[1]
    assert test_resize.type == 'Resize' and min(test_resize.scale) == 512
    assert cfg.model.pretrained is None


# arch -> (drop path rate, test resize of the shorter side for a 224 crop)
IMAGENET_RECIPE = {
    's': (0.1, 248),
    'm': (0.2, 248),
    'mx': (0.3, 248),
    'b': (0.3, 235),
    'bx': (0.4, 235),
}


@pytest.mark.parametrize('arch', sorted(IMAGENET_RECIPE))
def test_imagenet_recipe(arch):
    cfg = load(f'mmpretrain/spanet_{arch}_in1k.py')
    drop_path, resize = IMAGENET_RECIPE[arch]
    assert cfg.model.backbone.arch == arch
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert cfg.train_cfg.max_epochs == 300
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-3, 0.05)
    assert cfg.auto_scale_lr.base_batch_size == 1024 == 8 * cfg.train_dataloader.batch_size
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 5 and warmup.by_epoch
    assert cosine.type == 'CosineAnnealingLR' and cosine.begin == 5 and cosine.end == 300
    assert cfg.model.head.loss == dict(
        type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'
    )
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
    train_steps = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert 'RandAugment' in train_steps and 'RandomErasing' in train_steps
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        resize_step, crop = loader.dataset.pipeline[1:3]
        assert (resize_step.scale, resize_step.interpolation) == (resize, 'bicubic')
        assert crop.crop_size == 224


def test_model_index_lists_every_config():
    import yaml

    root = CONFIG_DIR.parent
    index = yaml.safe_load((root / 'model-index.yml').read_text())
    listed = {}
    for metafile in index['Import']:
        for model in yaml.safe_load((root / metafile).read_text())['Models']:
            listed[model['Config']] = model['Metadata']['Parameters']
    from test_configs.test_spanetv2_configs import SIZES as V2_SIZES

    assert set(listed) == {
        f'configs/{name}' for name in list(DENSE) + list(CLASSIFIERS) + list(V2_SIZES)
    }
    for name, count in CLASSIFIERS.items():
        assert listed[f'configs/{name}'] == count
    for name, millions in DENSE.items():
        assert round(listed[f'configs/{name}'] / 1e6) == millions


# The tools' command line (spanet_mm/engine/cli.py) applied to the real configs.
