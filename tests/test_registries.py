"""``type='SPANet'`` builds from each codebase's registry under its default scope."""
import importlib

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from spanet_mm import SPANet


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_builds_from_codebase_registry(scope, tiny_arch):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        backbone = registry.build(dict(type='SPANet', arch=tiny_arch, out_indices=(1, 2, 3)))
    assert type(backbone) is SPANet
    outs = backbone(torch.randn(1, 3, 75, 131))
    assert [tuple(o.shape) for o in outs] == [(1, 18, 10, 17), (1, 24, 5, 9), (1, 30, 3, 5)]


def test_custom_imports_in_a_config(tmp_path, tiny_arch):
    """The documented entry point: custom_imports in a user's own config."""
    cfg_file = tmp_path / 'my_cfg.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)\n"
        f"model = dict(type='SPANet', arch={tiny_arch!r}, out_indices=(3,))\n")
    cfg = Config.fromfile(str(cfg_file))
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(cfg.model)
    assert isinstance(backbone, SPANet) and backbone.out_indices == (3, )
