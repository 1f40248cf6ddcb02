"""The plumbing every tool shares (spanet_mm.codebases): scopes, configs, building models
and their tensor path."""

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from spanet_mm import SPANet
from spanet_mm.codebases import (
    TensorOutputs,
    build_model,
    classifier_config,
    codebase_of,
    load_config,
    retinanet_config,
    tensor_outputs,
)
from spanet_mm.models.spanetv2 import SPANetV2


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_codebase_is_the_default_scope():
    assert codebase_of(Config(dict(default_scope='mmseg'))) == 'mmseg'
    with pytest.raises(ValueError, match="default_scope to one of .* got 'mmocr'"):
        codebase_of(Config(dict(default_scope='mmocr')))
    with pytest.raises(ValueError, match='got None'):
        codebase_of(Config(dict()))


def test_build_keeps_the_callers_scope(tmp_path, tiny_arch):
    """Building a segmentor's backbone uses mmseg's registry inside its scope and leaves the
    process's default scope as it was."""
    config = _write(
        tmp_path / 'seg.py',
        f"""
default_scope = 'mmseg'
custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)
model = dict(type='EncoderDecoder',
             backbone=dict(type='SPANet', arch={tiny_arch!r}),
             decode_head=dict(type='FCNHead', in_channels=30, channels=8, num_classes=3,
                              in_index=3, num_convs=1))
""",
    )
    before = DefaultScope.get_current_instance()
    before_name = before.scope_name if before else None
    cfg = load_config(config, {'model.backbone.out_indices': (3,)})
    backbone = build_model(cfg, 'backbone')
    # The override reached the model (--cfg-options as DictAction parses them).
    assert isinstance(backbone, SPANet) and tuple(backbone.out_indices) == (3,)
    assert not backbone.training
    segmentor = build_model(cfg)
    assert type(segmentor).__name__ == 'EncoderDecoder'
    after = DefaultScope.get_current_instance()
    assert (after.scope_name if after else None) == before_name
    with pytest.raises(KeyError, match="no 'neck'"):
        build_model(cfg, 'neck')


def test_configs_written_in_code(tiny_arch):
    cfg = classifier_config(('spanet', tiny_arch), num_classes=5)
    model = build_model(cfg)
    assert model.head.fc.out_features == 5 and model.head.fc.in_features == 30
    v2 = build_model(classifier_config('spanetv2:s18_hybrid', num_classes=5))
    assert isinstance(v2.backbone, SPANetV2) and v2.backbone.gap_before_final_norm
    with pytest.raises(
        ValueError, match="Expected spanet:ARCH or spanetv2:ARCH .*got 'convnext:tiny'"
    ):
        classifier_config('convnext:tiny')
    det = retinanet_config(('spanet', tiny_arch))
    assert det.model.neck.in_channels == tiny_arch['embed_dims'][1:]
    assert det.model.backbone.out_indices == (1, 2, 3)


def test_tensor_outputs_flatten_every_model(tiny_arch):
    x = torch.randn(2, 3, 64, 64)
    backbone = TensorOutputs(SPANet(tiny_arch)).eval()
    with torch.no_grad():
        assert [tuple(t.shape) for t in backbone(x)] == [
            (2, 12, 16, 16),
            (2, 18, 8, 8),
            (2, 24, 4, 4),
            (2, 30, 2, 2),
        ]
        detector = tensor_outputs(
            build_model(retinanet_config(('spanet', tiny_arch))), 'mmdet', (64, 64), batch=2
        )
        outs = detector(x)
    # cls_score and bbox_pred for each of RetinaNet's 5 FPN levels, in that order.
    assert len(outs) == 10 and all(isinstance(t, torch.Tensor) for t in outs)
    assert outs[0].shape[-2:] == (8, 8) and outs[5].shape[-2:] == (8, 8)
    assert outs[0].shape[1] == 9 * 80 and outs[5].shape[1] == 9 * 4
