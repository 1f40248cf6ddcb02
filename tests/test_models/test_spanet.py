"""The SPANet backbone (spanet_mm/models/spanet.py): architecture, sizes, any input size,
freezing, registries, bad arguments and inputs, and every fast path against the paper-literal
model.
"""

import importlib
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from spanet_mm import SPANet
from spanet_tools.reference import ReferenceSPANet

from helpers.precision import check_bfloat16_weights

# Trainable parameters of the ImageNet classifier (backbone + final GN + 1000-class head),
# counted from the authors' released model code.
CLASSIFIER_PARAMS = {
    's': 28_605_096,
    'm': 41_686_952,
    'mx': 54_768_808,
    'b': 75_856_168,
    'bx': 99_718_312,
}


def count(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


TINY = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 2, 1])


# Non-square and odd input sizes (each stage's maps odd somewhere), and a square one.
INPUT_SIZES = [(333, 517), (97, 211), (32, 32)]


LAYOUTS = ['contiguous', 'channels_last']


def to_layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x


def paired_models(arch, release_layout, channels_last=True, **kwargs):
    """Our SPANet and the paper-literal reference with the same weights."""
    model = SPANet(arch, channels_last=channels_last, **kwargs)
    reference = ReferenceSPANet(**SPANet.resolve_arch(arch))
    reference.load_state_dict(release_layout(model.state_dict(), spf_masks=False))
    return model, reference


def _gradients(model, x, rename=None):
    x = x.clone().requires_grad_()
    outs = model(x)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return outs, x.grad, rename(grads) if rename else grads


@pytest.mark.parametrize('arch', sorted(CLASSIFIER_PARAMS))
def test_parameter_counts(arch):
    backbone = SPANet(arch, out_indices=(3,))  # norm3 is the classifier's final GN
    width = backbone.embed_dims[-1]
    assert count(backbone) + width * 1000 + 1000 == CLASSIFIER_PARAMS[arch]


@pytest.mark.parametrize('size', [(32, 32), (97, 211), (333, 517)])
def test_any_input_size(tiny_arch, size):
    model = SPANet(tiny_arch).eval()
    outs = model(torch.randn(1, 3, *size))
    assert len(outs) == 4
    h, w = size
    for i, (out, stride) in enumerate(zip(outs, (4, 8, 16, 32))):
        # conv 7x7/4 pad 2, then 3x3/2 pad 1 per stage
        h = (h + 4 - 7) // 4 + 1 if i == 0 else (h - 1) // 2 + 1
        w = (w + 4 - 7) // 4 + 1 if i == 0 else (w - 1) // 2 + 1
        assert out.shape == (1, model.embed_dims[i], h, w), stride
        assert torch.isfinite(out).all()


def test_batch_independence(tiny_arch):
    model = SPANet(tiny_arch).eval()
    x = torch.randn(3, 3, 45, 77)
    with torch.no_grad():
        batched = model(x)
        single = [model(x[i : i + 1]) for i in range(3)]
    for level, out in enumerate(batched):
        for i in range(3):
            torch.testing.assert_close(out[i : i + 1], single[i][level], atol=1e-5, rtol=1e-5)


def test_state_dict_has_no_masks_and_forward_changes_nothing(tiny_arch):
    model = SPANet(tiny_arch).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not any('filter' in k or 'mask' in k for k in before)
    assert list(model.buffers()) == []
    model(torch.randn(1, 3, 64, 96))
    model(torch.randn(1, 3, 33, 47))
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_out_indices_and_negative_indices(tiny_arch):
    model = SPANet(tiny_arch, out_indices=(1, -1))
    assert model.out_indices == (1, 3)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [18, 30]
    assert hasattr(model, 'norm1') and not hasattr(model, 'norm0')


@pytest.mark.parametrize('frozen', [0, 1, 2])
def test_frozen_stages(tiny_arch, frozen):
    model = SPANet(tiny_arch, frozen_stages=frozen)
    model.train()
    frozen_prefixes = (
        ['stem.']
        + [f'stages.{i}.' for i in range(frozen)]
        + [f'downsamples.{i - 1}.' for i in range(1, frozen)]
        + [f'norm{i}.' for i in range(frozen)]
    )
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(tuple(frozen_prefixes))), name
    for i in range(frozen):
        assert not model.stages[i].training and not getattr(model, f'norm{i}').training
    assert model.stages[frozen].training
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert model.stem.weight.grad is None
    assert model.stages[frozen][0].mlp.fc1.weight.grad is not None


def test_res_scale_only_in_stages_3_and_4():
    model = SPANet('s')
    has_scale = [hasattr(stage[0].res_scale1, 'scale') for stage in model.stages]
    assert has_scale == [False, False, True, True]


def test_custom_arch_options():
    arch = dict(
        embed_dims=[12, 24],
        depths=[1, 1],
        radii=[3, 0],
        balances=[0.6, 0.9],
        kernel_size=5,
        mlp_ratio=2,
        res_scale=[True, False],
    )
    model = SPANet(arch, out_indices=(0, 1))
    mixer = model.stages[0][0].token_mixer
    assert mixer.chunk_sizes == (6, 6) and mixer.dwconv[0].kernel_size == (1, 5)
    assert mixer.spectral_filter.radius == 3
    assert model.stages[0][0].mlp.fc1.out_channels == 24
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [12, 24]


def test_wrong_input_channels(tiny_arch):
    with pytest.raises(
        ValueError,
        match=r'expects input of shape \(N, 3, H, W\), got '
        r'\(1, 4, 64, 64\)',
    ):
        SPANet(tiny_arch)(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r'\(N, 1, H, W\), got \(2, 3, 64, 64\)'):
        SPANet(tiny_arch, in_channels=1)(torch.randn(2, 3, 64, 64))


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown SPANet arch 'xl'.*b, bx, m, mx, s"):
        SPANet('xl')


@pytest.mark.parametrize(
    'arch,message',
    [
        (dict(embed_dims=[64, 128]), r"\['depths'\] missing"),
        (dict(depths=[1, 1]), r"\['embed_dims'\] missing"),
        (dict(embed_dims=[64, 128, 320], depths=[1, 1]), r'depths has 2 .* embed_dims has 3'),
        (dict(embed_dims=[64, 128], depths=[1, 1], radii=[2, 2, 1]), r'radii has 3'),
        (
            dict(embed_dims=[64, 128], depths=[1, 1], widths=[2]),
            r'Unknown SPANet arch keys '
            r"\['widths'\]",
        ),
        (
            dict(embed_dims=[4, 8, 8, 8], depths=[1, 1, 1, 1]),
            r'torch.chunk gives 2 chunks for 3 balances',
        ),
    ],
)
def test_bad_custom_arch(arch, message):
    with pytest.raises(ValueError, match=message):
        SPANet(arch, out_indices=(0,))


@pytest.mark.parametrize('out_indices', [(4,), (0, -5), ()])
def test_bad_out_indices(tiny_arch, out_indices):
    with pytest.raises(ValueError, match='out_indices'):
        SPANet(tiny_arch, out_indices=out_indices)


@pytest.mark.parametrize(
    'kwargs,message',
    [
        (dict(channels_last=1), r'channels_last must be a bool, got 1'),
        (dict(channels_last_min_area=-1), r'channels_last_min_area must be an int >= 0, got -1'),
    ],
)
def test_bad_speed_settings(tiny_arch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SPANet(tiny_arch, **kwargs)


def test_bad_frozen_stages(tiny_arch):
    with pytest.raises(ValueError, match=r'frozen_stages must be in \[-1, 4\], got 5'):
        SPANet(tiny_arch, frozen_stages=5)


@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('arch,size', [('tiny', s) for s in INPUT_SIZES] + [('s', (224, 224))])
def test_backbone_eval_matches_reference(tiny_arch, arch, size, channels_last, release_layout):
    arch = tiny_arch if arch == 'tiny' else arch
    model, reference = paired_models(arch, release_layout, channels_last)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    for a, b in zip(ours, theirs):
        assert a.is_contiguous()
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('batch', [1, 8])
@pytest.mark.parametrize('layout', LAYOUTS)
def test_backbone_input_layouts_and_batches(tiny_arch, layout, batch, release_layout):
    """Channels-last or contiguous images, one or eight of them: the reference's features."""
    model, reference = paired_models(tiny_arch, release_layout)
    x = torch.randn(batch, 3, 45, 77)
    with torch.no_grad():
        ours, theirs = model.eval()(to_layout(x, layout)), reference.eval()(x)
    for a, b in zip(ours, theirs):
        assert a.is_contiguous() and a.shape[0] == batch
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_small_at_detection_size_matches_reference(release_layout):
    model, reference = paired_models('s', release_layout)
    x = torch.randn(1, 3, 800, 1216)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    assert [tuple(o.shape[-2:]) for o in ours] == [(200, 304), (100, 152), (50, 76), (25, 38)]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('size', [(97, 211), (32, 32)])
def test_backbone_train_matches_reference(tiny_arch, size, channels_last, release_layout):
    """Train mode: same features, same input and weight gradients."""
    model, reference = paired_models(tiny_arch, release_layout, channels_last)
    x = torch.randn(2, 3, *size)
    ours, ours_dx, ours_grads = _gradients(
        model.train(), x, lambda g: release_layout(g, spf_masks=False)
    )
    theirs, theirs_dx, theirs_grads = _gradients(reference.train(), x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours_dx, theirs_dx, atol=1e-5, rtol=1e-4)
    assert sorted(ours_grads) == sorted(theirs_grads)
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, theirs_grads[name], atol=2e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize('frozen', [0, 1])
def test_channels_last_training_with_frozen_stages(tiny_arch, frozen):
    """The first trainable stage after frozen ones gets input that needs no gradient: the
    channels-last path must train it (torch's GroupNorm backward would crash) and give the
    contiguous path's gradients."""
    models = {
        flag: SPANet(tiny_arch, frozen_stages=frozen, channels_last=flag) for flag in (True, False)
    }
    models[False].load_state_dict(models[True].state_dict())
    x = torch.randn(2, 3, 64, 48)
    grads = {}
    for channels_last, model in models.items():
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
        grads[channels_last] = {
            n: p.grad for n, p in model.named_parameters() if p.grad is not None
        }
    assert sorted(grads[True]) == sorted(grads[False])
    assert f'stages.{frozen}.0.norm1.weight' in grads[True]
    for name, grad in grads[True].items():
        torch.testing.assert_close(grad, grads[False][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize('channels_last', [True, False])
def test_backbone_bfloat16_autocast_matches_reference(tiny_arch, channels_last, release_layout):
    model, reference = paired_models(tiny_arch, release_layout, channels_last)
    x = torch.randn(1, 3, 97, 211)
    with torch.no_grad():
        exact = reference.eval()(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            ours = model.eval()(x)
            theirs = reference(x)
    for a, b, e in zip(ours, theirs, exact):
        # bfloat16 keeps about 3 significant digits; GroupNorm'ed features are unit scale.
        assert a.dtype == b.dtype
        assert torch.isfinite(a).all()
        assert (a.float() - e).abs().mean() < 0.05
        assert (a.float() - b.float()).abs().mean() < 0.05


@pytest.mark.parametrize('batch', [1, 8])
@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('autocast', [True, False])
def test_inference_with_bfloat16_weights(tiny_arch, channels_last, batch, autocast):
    """Weights converted once (``model.bfloat16()``), with float32 input under autocast or
    bfloat16 input without it."""
    model = SPANet(tiny_arch, channels_last=channels_last).eval()
    check_bfloat16_weights(model, torch.randn(batch, 3, 97, 211), autocast)


def test_bfloat16_autocast_training_step(tiny_arch, release_layout):
    """Autocast training (autograd path in bfloat16): gradients close to float32's."""
    model, _ = paired_models(tiny_arch, release_layout)
    x = torch.randn(2, 3, 64, 64)
    _, _, exact = _gradients(model.train(), x)
    model.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, _, half = _gradients(model, x)
    assert sorted(half) == sorted(exact)
    for name, grad in exact.items():
        assert torch.isfinite(half[name]).all(), name
        # bfloat16 gradients: within a few percent of the float32 ones, relative to scale.
        assert (half[name].float() - grad).norm() <= 0.1 * grad.norm() + 1e-6, name


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
        f"model = dict(type='SPANet', arch={tiny_arch!r}, out_indices=(3,))\n"
    )
    cfg = Config.fromfile(str(cfg_file))
    from mmdet.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(cfg.model)
    assert isinstance(backbone, SPANet) and backbone.out_indices == (3,)


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(drop_path_rate=1.5), r'drop_path_rate must be in \[0, 1\), got 1\.5'),
        (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\), got 1\.0'),
        (dict(drop_path_rate=-0.1), r'drop_path_rate must be in \[0, 1\)'),
        (dict(drop_path_rate='0.1'), r'drop_path_rate must be in \[0, 1\)'),
        (dict(in_channels=0), 'in_channels must be a positive int, got 0'),
        (dict(in_channels=-3), 'in_channels must be a positive int, got -3'),
        (dict(in_channels=2.5), 'in_channels must be a positive int, got 2.5'),
        (dict(in_channels=True), 'in_channels must be a positive int, got True'),
        (dict(out_indices=(4,)), r'out_indices must be in \[-4, 3\]'),
        (dict(out_indices=()), 'out_indices must be an int or a non-empty sequence'),
        (dict(out_indices=(0.5,)), 'out_indices must be an int or a non-empty sequence'),
        (dict(frozen_stages=5), r'frozen_stages must be in \[-1, 4\], got 5'),
        (dict(frozen_stages=-2), r'frozen_stages must be in \[-1, 4\], got -2'),
    ],
)
def test_constructor_range_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SPANet(TINY, **kwargs)


@pytest.mark.parametrize(
    'arch, message',
    [
        ('huge', "Unknown SPANet arch 'huge'; valid names are"),
        (dict(embed_dims=[12, 18, 24, 30]), r"needs the keys embed_dims and depths; \['depths'\]"),
        (dict(TINY, depths=[1, 0, 2, 1]), 'depths must be a non-empty list of positive ints'),
        (dict(TINY, depths=[]), 'depths must be a non-empty list of positive ints'),
        (dict(TINY, depths=[1, 1, 2.0, 1]), 'depths must be a non-empty list of positive ints'),
        (dict(TINY, embed_dims=[12, -18, 24, 30]), 'embed_dims must be positive ints'),
        (dict(TINY, embed_dims=[12, 18, 24]), 'one entry per stage: depths has 4'),
        (dict(TINY, radii=[2, 2, 1]), 'one entry per stage: depths has 4'),
        (dict(TINY, res_scale=[True]), 'one entry per stage: depths has 4'),
        (
            dict(TINY, balances=[0.7, 1.0, 0.9]),
            r'balances must be a non-empty list of numbers '
            r'in \(0, 1\)',
        ),
        (dict(TINY, balances=[0.0]), r'balances must be .* in \(0, 1\)'),
        (dict(TINY, balances=[1.5]), r'balances must be .* in \(0, 1\)'),
        (dict(TINY, balances=[]), r'balances must be a non-empty list'),
        (dict(TINY, radii=[2, -1, 1, 1]), 'radii must be >= 0'),
        (dict(TINY, kernel_size=6), 'kernel_size must be a positive odd int, got 6'),
        (dict(TINY, mlp_ratio=0), 'mlp_ratio must be positive, got 0'),
        (dict(TINY, heads=4), r"Unknown SPANet arch keys \['heads'\]"),
    ],
)
def test_arch_checks(arch, message):
    with pytest.raises(ValueError, match=message):
        SPANet(arch)


def test_arch_of_another_type():
    with pytest.raises(TypeError, match='arch must be a str or a dict, got int'):
        SPANet(3)


@pytest.mark.parametrize('shape', [(3, 64, 64), (1, 4, 64, 64), (1, 1, 64, 64), (1, 3, 1, 64, 64)])
def test_forward_rejects_wrong_shapes(shape):
    model = SPANet(TINY).eval()
    with pytest.raises(
        ValueError, match=re.escape(f'expects input of shape (N, 3, H, W), got {shape}')
    ):
        model(torch.zeros(shape))


def test_forward_with_other_in_channels():
    model = SPANet(TINY, in_channels=1).eval()
    with torch.no_grad():
        assert [o.shape[1] for o in model(torch.randn(1, 1, 64, 64))] == TINY['embed_dims']
    with pytest.raises(ValueError, match=re.escape('(N, 1, H, W), got (1, 3, 64, 64)')):
        model(torch.zeros(1, 3, 64, 64))
