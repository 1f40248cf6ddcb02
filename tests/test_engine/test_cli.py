"""The train and test tools' command lines (spanet_mm/engine/cli.py): flags become config
entries the way each codebase's own tools make them, and bad input is named."""

import argparse

import pytest
from mmengine.config import Config

from spanet_mm.engine import cli
from spanet_mm.engine.compile import compile_options
from spanet_mm.engine.cpu_distributed import setup_cpu_distributed

from helpers.commands import REPO_ROOT

CONFIG_DIR = REPO_ROOT / 'configs'


def _train_args(*argv):
    return cli.parse_args(
        cli.train_parser(), [str(CONFIG_DIR / 'mmdet/retinanet_spanet_s_1x.py'), *argv]
    )


def test_train_flags_become_config_entries(tmp_path):
    args = _train_args(
        '--work-dir',
        str(tmp_path),
        '--amp',
        '--auto-scale-lr',
        '--resume',
        'ckpt.pth',
        '--cfg-options',
        'train_cfg.max_epochs=2',
    )
    cfg = cli.apply_train_args(cli.load_config(args), args)
    assert cfg.work_dir == str(tmp_path)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=8)
    assert (cfg.resume, cfg.load_from) == (True, 'ckpt.pth')
    assert cfg.train_cfg.max_epochs == 2
    auto = _train_args('--resume')
    cfg = cli.apply_train_args(cli.load_config(auto), auto)
    assert (cfg.resume, cfg.load_from) == (True, None)
    assert cfg.work_dir == './work_dirs/retinanet_spanet_s_1x'


@pytest.mark.parametrize(
    'name,scope',
    [
        ('mmdet/mask_rcnn_spanet_s_1x.py', 'mmdet'),
        ('mmseg/fpn_spanet_s_ade20k_80k.py', 'mmseg'),
        ('mmpretrain/spanet_s_in1k.py', 'mmpretrain'),
    ],
)
def test_test_flags_follow_each_codebase(name, scope, tmp_path):
    out = str(tmp_path / ('preds' if scope == 'mmseg' else 'preds.pkl'))
    args = cli.parse_args(
        cli.test_parser(), [str(CONFIG_DIR / name), 'ckpt.pth', '--out', out, '--show-dir', 'vis']
    )
    cfg = cli.load_config(args)
    assert cli.codebase_of(cfg) == scope
    cfg = cli.apply_test_args(cfg, args, scope)
    assert cfg.load_from == 'ckpt.pth'
    hook = cfg.default_hooks.visualization
    if scope == 'mmdet':
        assert hook.draw and hook.test_out_dir == 'vis'
    elif scope == 'mmseg':
        assert hook.draw and cfg.visualizer.save_dir == 'vis'
        assert cfg.test_evaluator.output_dir == out and cfg.test_evaluator.keep_results
    else:
        assert hook.enable and hook.out_dir == 'vis'


def test_bad_tool_input_is_named():
    with pytest.raises(ValueError, match="default_scope to one of .* got 'mmocr'"):
        cli.codebase_of(Config(dict(default_scope='mmocr')))
    args = cli.parse_args(
        cli.test_parser(),
        [str(CONFIG_DIR / 'mmdet/retinanet_spanet_s_1x.py'), 'ckpt.pth', '--out', 'preds.json'],
    )
    with pytest.raises(ValueError, match=r"--out must name a \.pkl file .* 'preds.json'"):
        cli.apply_test_args(cli.load_config(args), args, 'mmdet')
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    with pytest.raises(ValueError, match='env_cfg.dist_cfg.backend=gloo'):
        setup_cpu_distributed(cfg)


@pytest.mark.parametrize('text, size', [('512', (512, 512)), ('800x1216', (800, 1216))])
def test_size_arg(text, size):
    assert cli.size_arg(text) == size


@pytest.mark.parametrize('text', ['0', '12x', 'axb', '1x2x3'])
def test_size_arg_names_what_it_expected(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f'like 512 or 800x1216, got {text!r}'):
        cli.size_arg(text)


@pytest.mark.parametrize(
    'value, options',
    [
        (None, None),
        (False, None),
        (True, {}),
        (dict(backend='aot_eager'), {'backend': 'aot_eager'}),
    ],
)
def test_compile_setting_is_read_as_mmengine_reads_it(value, options):
    assert compile_options(Config(dict(compile=value))) == options


def test_compile_setting_of_another_type_is_refused():
    with pytest.raises(TypeError, match="compile must be a bool or a dict, got 'yes'"):
        compile_options(Config(dict(compile='yes')))
