"""The SPANetV2 backbone: the published archs' sizes, exactness against the plain
reference at any input size, the authors' checkpoint layout, registries, MMPretrain head,
freezing, checkpointing, mixed precision."""

import importlib
import logging

import pytest
import torch

from spanet_mm import SPANetV2
from spanet_tools.reference import ReferenceSPANetV2

from helpers.model_sizes import SPANETV2_CLASSIFIER_PARAMS as CLASSIFIER_PARAMS
from helpers.model_sizes import SPANETV2_WITHOUT_NORM_AND_HEAD as WITHOUT_NORM_AND_HEAD
from helpers.precision import check_bfloat16_weights
from helpers.spanetv2_formulas import to_release_classifier

# Small, with every feature of the published models: ExSPAM in stages 1-2 (head width 8),
# MixAttention and Attention (32-channel heads) in 3-4, ResScale in 3-4.
TINY = dict(
    embed_dims=[32, 64, 96, 128],
    depths=[1, 1, 2, 1],
    mixers=['spectral', 'spectral', 'mix_attention', 'attention'],
)
TINY_PURE = dict(TINY, mixers=['spectral'] * 4)


def count(module):
    return sum(p.numel() for p in module.parameters())


def randomised(model):
    """Non-trivial values for parameters that initialise to constants (norms, scales,
    StarReLU, biases), so that exactness tests see every parameter's role."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if (
                name.endswith(
                    (
                        'norm.weight',
                        'norm1.weight',
                        'norm2.weight',
                        'post_norm.weight',
                        'pre_norm.weight',
                        'proj.1.weight',
                        'scale',
                    )
                )
                or name.endswith('weight')
                and name.startswith('norm')
            ):
                param.uniform_(0.5, 1.5)
            elif name.endswith('bias'):
                param.normal_(0, 0.2)
            elif 'filter_' in name:
                param.normal_(0, 1)
    return model


def reference_for(model, num_classes=0):
    """The plain reference with the model's weights (same names)."""
    reference = ReferenceSPANetV2(**SPANetV2.resolve_arch(model.arch), num_classes=num_classes)
    missing, unexpected = reference.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(('norm', 'head')) for k in missing), missing
    return reference.eval()


@pytest.mark.parametrize('arch', sorted(CLASSIFIER_PARAMS))
@pytest.mark.usefixtures('mmpretrain_scope')
def test_parameter_counts(arch):
    from spanet_mm.models.heads import SPANetV2ClsHead

    with torch.device('meta'):
        dense = SPANetV2(arch)
        classifier = SPANetV2(arch, out_indices=(3,), gap_before_final_norm=True)
        head = SPANetV2ClsHead(1000, classifier.embed_dims[-1])
    # Output norms: one weight-only LayerNorm per stage.
    assert count(dense) == WITHOUT_NORM_AND_HEAD[arch] + sum(dense.embed_dims)
    assert count(classifier) + count(head) == CLASSIFIER_PARAMS[arch]
    assert SPANetV2.arch_name_of(dense.state_dict()) == arch


def test_arch_names_and_validation():
    assert SPANetV2.resolve_arch('spanetv2_s18_hybrid')['mixers'] == [
        'spectral',
        'spectral',
        'mix_attention',
        'attention',
    ]
    with pytest.raises(ValueError, match='Unknown SPANetV2 arch'):
        SPANetV2('s18')
    with pytest.raises(ValueError, match='mixers must be among'):
        SPANetV2(dict(TINY, mixers=['spectral', 'pool', 'attention', 'attention']))
    with pytest.raises(ValueError, match='attention_head_dims=32'):
        SPANetV2(dict(TINY, embed_dims=[32, 64, 80, 128]))
    with pytest.raises(ValueError, match='spectral_heads=4'):
        SPANetV2(dict(TINY_PURE, embed_dims=[30, 64, 96, 128]))
    with pytest.raises(ValueError, match='one entry per stage'):
        SPANetV2(dict(TINY, mixers=['spectral'] * 3))
    with pytest.raises(ValueError, match='Unknown SPANetV2 arch keys'):
        SPANetV2(dict(TINY, kernel_size=7))


@pytest.mark.parametrize(
    'arch,size',
    [(TINY_PURE, (224, 224)), (TINY, (61, 97)), (TINY_PURE, (97, 61)), (TINY, (33, 32))],
)
def test_equals_reference_at_any_size(arch, size):
    model = randomised(SPANetV2(arch)).eval()
    reference = reference_for(model)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert len(ours) == 4
    for stride, out, expected in zip((4, 8, 16, 32), ours, theirs):
        assert out.shape == expected.shape and out.is_contiguous()
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4, msg=f'stride {stride}')


def test_gradients_equal_reference():
    model = randomised(SPANetV2(TINY)).train()
    reference = reference_for(model).train()
    x = torch.randn(2, 3, 70, 90)
    weights = [torch.randn(o.shape) for o in reference(x)]
    for net in (model, reference):
        sum((o * w).sum() for o, w in zip(net(x), weights)).backward()
    ref_grads = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        if name.startswith('norm'):
            continue
        torch.testing.assert_close(
            param.grad,
            ref_grads[name].grad,
            atol=1e-4,
            rtol=1e-3,
            msg=lambda m, name=name: f'{name}: {m}',
        )


@pytest.mark.usefixtures('mmpretrain_scope')
def test_classifier_equals_reference():
    from spanet_mm.models.heads import SPANetV2ClsHead

    backbone = randomised(SPANetV2(TINY, out_indices=(3,), gap_before_final_norm=True)).eval()
    head = SPANetV2ClsHead(7, 128).eval()
    reference = ReferenceSPANetV2(**SPANetV2.resolve_arch(TINY), num_classes=7).eval()
    state = {
        ('norm.' + k[6:] if k.startswith('norm3.') else k): v
        for k, v in backbone.state_dict().items()
    }
    state.update({'head.' + k: v for k, v in head.state_dict().items()})
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith('norm') for k in missing)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        feats = backbone(x)
        assert len(feats) == 1 and feats[0].shape == (2, 128)
        torch.testing.assert_close(head(feats), reference.classify(x), atol=1e-4, rtol=1e-4)


def _release_file(tmp_path, wrap='state_dict', num_classes=5):
    """A classifier checkpoint in the authors' layout, made from a reference model's own
    weights, and that model."""
    reference = randomised(
        ReferenceSPANetV2(**SPANetV2.resolve_arch(TINY), num_classes=num_classes)
    ).eval()
    with torch.no_grad():  # the dense norms are not in the file: keep them at their init
        for i in range(4):
            getattr(reference, f'norm{i}').weight.fill_(1)
    state = reference.state_dict()
    release = to_release_classifier(
        {k: v for k, v in state.items() if not k.startswith(('norm.', 'head.'))},
        {k: v for k, v in state.items() if k.startswith(('norm.', 'head.'))},
    )
    path = tmp_path / 'spanetv2_tiny_release.pth'
    torch.save({wrap: release} if wrap else release, path)
    return str(path), reference


@pytest.mark.parametrize('wrap', ['state_dict', 'model', None])
def test_release_checkpoint_loads_through_init_cfg(tmp_path, wrap):
    path, reference = _release_file(tmp_path, wrap)
    model = SPANetV2(TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    x = torch.randn(1, 3, 77, 64)
    with torch.no_grad():
        for ours, theirs in zip(model.eval()(x), reference(x)):
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.usefixtures('mmpretrain_scope')
def test_release_classifier_norm_goes_to_gap_backbone(tmp_path):
    from spanet_mm.models.heads import SPANetV2ClsHead

    path, reference = _release_file(tmp_path)
    backbone = SPANetV2(
        TINY,
        out_indices=(3,),
        gap_before_final_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint=path),
    )
    backbone.init_weights()
    head = SPANetV2ClsHead(5, 128)
    release = torch.load(path, weights_only=True)['state_dict']
    head.load_state_dict({k[5:]: v for k, v in release.items() if k.startswith('head.')})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            head.eval()(backbone.eval()(x)), reference.classify(x), atol=1e-4, rtol=1e-4
        )


def test_release_layout_hook():
    state = {
        'downsample_layers.0.conv.weight': torch.zeros(1),
        'stages.3.0.norm1.weight': torch.zeros(1),
        'norm.weight': torch.ones(1),
        'norm.bias': torch.ones(1),
        'head.fc1.weight': torch.ones(1),
    }
    dense, dropped = SPANetV2.from_release_layout(state)
    assert set(dense) == {'downsample_layers.0.conv.weight', 'stages.3.0.norm1.weight'}
    assert sorted(k for keys in dropped.values() for k in keys) == [
        'head.fc1.weight',
        'norm.bias',
        'norm.weight',
    ]
    gap, dropped = SPANetV2.from_release_layout(state, gap_before_final_norm=True)
    assert {'norm3.weight', 'norm3.bias'} <= set(gap)
    assert [k for keys in dropped.values() for k in keys] == ['head.fc1.weight']
    # Called on an instance, the instance's setting decides.
    instance = SPANetV2(TINY, out_indices=(3,), gap_before_final_norm=True)
    assert 'norm3.bias' in instance.from_release_layout(state)[0]
    own = SPANetV2(TINY).state_dict()
    assert SPANetV2.from_release_layout(own) == (own, {})


def test_shape_mismatch_is_named(tmp_path):
    path, _ = _release_file(tmp_path)
    model = SPANetV2(
        dict(TINY, embed_dims=[32, 64, 96, 160]), init_cfg=dict(type='Pretrained', checkpoint=path)
    )
    with pytest.raises(ValueError, match=r'stages\.3'):
        model.init_weights()


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_builds_from_codebase_registries(scope):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model = registry.build(dict(type='SPANetV2', arch=TINY, out_indices=(1, 3)))
    assert isinstance(model, SPANetV2) and model.out_channels == [64, 128]
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 8), (1, 128, 2, 2)]


@pytest.mark.usefixtures('mmpretrain_scope')
def test_image_classifier_loss_and_predict():
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    from spanet_mm.models.heads import SPANetV2ClsHead

    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='SPANetV2', arch=TINY, out_indices=(3,), gap_before_final_norm=True),
            neck=None,
            head=dict(
                type='SPANetV2ClsHead',
                num_classes=4,
                in_channels=128,
                loss=dict(type='CrossEntropyLoss'),
            ),
        )
    )
    assert isinstance(model.head, SPANetV2ClsHead)
    names = {k for k, _ in model.named_parameters()}
    assert {'head.fc1.weight', 'head.norm.bias', 'head.fc2.weight', 'backbone.norm3.bias'} <= names
    x = torch.randn(2, 3, 64, 64)
    samples = [DataSample().set_gt_label(i) for i in (0, 3)]
    losses = model(x, samples, mode='loss')
    losses['loss'].backward()
    assert torch.isfinite(losses['loss'])
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        preds = model(x, [DataSample() for _ in range(2)], mode='predict')
    assert preds[0].pred_score.shape == (4,)


def test_import_does_not_import_mmpretrain():
    import subprocess
    import sys

    code = 'import sys, spanet_mm; print("mmpretrain" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


def test_batch_independence_and_forward_changes_nothing():
    model = randomised(SPANetV2(TINY)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert list(model.buffers()) == []
    x = torch.randn(3, 3, 37, 45)
    with torch.no_grad():
        batched = model(x)
        singles = [model(x[i : i + 1]) for i in range(3)]
        model(torch.randn(1, 3, 50, 36))
    for level, out in enumerate(batched):
        for i in range(3):
            torch.testing.assert_close(out[i : i + 1], singles[i][level], atol=1e-5, rtol=1e-5)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_outputs_follow_data_writes_between_calls():
    """What an EMA hook does between validation runs: new values via ``.data``."""
    model = randomised(SPANetV2(TINY_PURE)).eval()
    other = randomised(SPANetV2(TINY_PURE)).eval()
    x = torch.randn(1, 3, 80, 72)
    with torch.no_grad():
        model(x)
        for p, q in zip(model.parameters(), other.parameters()):
            p.data.copy_(q.data)
        torch.testing.assert_close(model(x), other(x))
        torch.testing.assert_close(model(x), reference_for(model)(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('frozen', [0, 2])
def test_frozen_stages(frozen):
    model = SPANetV2(TINY, frozen_stages=frozen)
    model.train()
    prefixes = (
        ['downsample_layers.0.']
        + [f'downsample_layers.{i}.' for i in range(frozen)]
        + [f'stages.{i}.' for i in range(frozen)]
        + [f'norm{i}.' for i in range(frozen)]
    )
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(tuple(prefixes))), name
    assert all(not model.stages[i].training for i in range(frozen))
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert model.downsample_layers[0].conv.weight.grad is None
    assert model.stages[frozen][0].mlp.fc1.weight.grad is not None


def test_bfloat16_autocast():
    model = randomised(SPANetV2(TINY)).eval()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        full = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = model(x)
    for f, h in zip(full, half):
        assert torch.isfinite(h).all()
        # Layer-normed outputs are unit scale: bfloat16 keeps about two decimal digits.
        assert (h.float() - f).abs().mean() < 0.1


@pytest.mark.parametrize('input_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('batch', [1, 8])
@pytest.mark.parametrize('autocast', [True, False])
def test_inference_with_bfloat16_weights(batch, autocast, input_format):
    """Weights converted once (``model.bfloat16()``), with float32 input under autocast or
    bfloat16 input without it, in either memory format."""
    model = randomised(SPANetV2(TINY)).eval()
    x = torch.randn(batch, 3, 96, 80).contiguous(memory_format=input_format)
    check_bfloat16_weights(model, x, autocast)


def test_out_indices_and_out_channels():
    model = SPANetV2(TINY, out_indices=(0, -1))
    assert model.out_indices == (0, 3) and model.out_channels == [32, 128]
    assert hasattr(model, 'norm0') and not hasattr(model, 'norm1')
    assert model.norm0.bias is None and model.norm0.eps == 1e-6


def test_pretrained_missing_file_is_an_error(caplog):
    model = SPANetV2(TINY, init_cfg=dict(type='Pretrained', checkpoint='/nonexistent.pth'))
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match='not found'):
        model.init_weights()


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(drop_path_rate=1.5), r'drop_path_rate must be in \[0, 1\)'),
        (dict(in_channels=0), 'in_channels must be a positive int'),
        (dict(out_indices=(7,)), 'out_indices must be in'),
    ],
)
def test_constructor_range_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SPANetV2(TINY_PURE, **kwargs)
