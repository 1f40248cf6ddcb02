"""The SPANet backbone: architecture, any input size, freezing, checkpointing, bad input.

Its features against the paper-literal model (every layout, dtype and mode) are tested in
tests/test_fast_paths.py.
"""
import pytest
import torch

from spanet_mm import SPANet

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


@pytest.mark.parametrize('arch', sorted(CLASSIFIER_PARAMS))
def test_parameter_counts(arch):
    backbone = SPANet(arch, out_indices=(3, ))  # norm3 is the classifier's final GN
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
        single = [model(x[i:i + 1]) for i in range(3)]
    for level, out in enumerate(batched):
        for i in range(3):
            torch.testing.assert_close(out[i:i + 1], single[i][level], atol=1e-5, rtol=1e-5)


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
    frozen_prefixes = ['stem.'] + [f'stages.{i}.' for i in range(frozen)] + \
        [f'downsamples.{i - 1}.' for i in range(1, frozen)] + \
        [f'norm{i}.' for i in range(frozen)]
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
    arch = dict(embed_dims=[12, 24], depths=[1, 1], radii=[3, 0], balances=[0.6, 0.9],
                kernel_size=5, mlp_ratio=2, res_scale=[True, False])
    model = SPANet(arch, out_indices=(0, 1))
    mixer = model.stages[0][0].token_mixer
    assert mixer.chunk_sizes == (6, 6) and mixer.dwconv[0].kernel_size == (1, 5)
    assert mixer.spectral_filter.radius == 3
    assert model.stages[0][0].mlp.fc1.out_channels == 24
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [12, 24]


# -- bad input --------------------------------------------------------------------------

def test_wrong_input_channels(tiny_arch):
    with pytest.raises(ValueError, match=r'expects input of shape \(N, 3, H, W\), got '
                       r'\(1, 4, 64, 64\)'):
        SPANet(tiny_arch)(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r'\(N, 1, H, W\), got \(2, 3, 64, 64\)'):
        SPANet(tiny_arch, in_channels=1)(torch.randn(2, 3, 64, 64))


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown SPANet arch 'xl'.*b, bx, m, mx, s"):
        SPANet('xl')


@pytest.mark.parametrize('arch,message', [
    (dict(embed_dims=[64, 128]), r"\['depths'\] missing"),
    (dict(depths=[1, 1]), r"\['embed_dims'\] missing"),
    (dict(embed_dims=[64, 128, 320], depths=[1, 1]), r'depths has 2 .* embed_dims has 3'),
    (dict(embed_dims=[64, 128], depths=[1, 1], radii=[2, 2, 1]), r'radii has 3'),
    (dict(embed_dims=[64, 128], depths=[1, 1], widths=[2]), r"Unknown SPANet arch keys "
     r"\['widths'\]"),
    (dict(embed_dims=[4, 8, 8, 8], depths=[1, 1, 1, 1]),
     r'torch.chunk gives 2 chunks for 3 balances'),
])
def test_bad_custom_arch(arch, message):
    with pytest.raises(ValueError, match=message):
        SPANet(arch, out_indices=(0, ))


@pytest.mark.parametrize('out_indices', [(4, ), (0, -5), ()])
def test_bad_out_indices(tiny_arch, out_indices):
    with pytest.raises(ValueError, match='out_indices'):
        SPANet(tiny_arch, out_indices=out_indices)


@pytest.mark.parametrize('kwargs,message', [
    (dict(channels_last=1), r'channels_last must be a bool, got 1'),
    (dict(channels_last_min_area=-1), r'channels_last_min_area must be an int >= 0, got -1'),
])
def test_bad_speed_settings(tiny_arch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SPANet(tiny_arch, **kwargs)


def test_bad_frozen_stages(tiny_arch):
    with pytest.raises(ValueError, match=r'frozen_stages must be in \[-1, 4\], got 5'):
        SPANet(tiny_arch, frozen_stages=5)
