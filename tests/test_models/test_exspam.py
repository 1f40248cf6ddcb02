"""ExSPAM (SPANetV2's spectral token mixer) against the spec's per-head formula, its
spectral-gain cache, and its export form (real products, no branch on the size)."""

import warnings

import pytest
import torch

from spanet_mm.models.exspam import ExSPAM, real_products, uses_real_products

from helpers.spanetv2_formulas import exspam_formula


def _randomised(module):
    """Non-trivial values for what initialises to constants (GroupNorm, conv biases)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if 'filter' in name or name.endswith('bias') or name == 'proj.1.weight':
                param.copy_(torch.randn_like(param) * (1.0 if 'filter' in name else 0.3))
    return module


# (channels, stored filter size, feature size): the stored size itself (no resize), larger
# and smaller, odd and non-square sizes (stage 1 of SPANetV2 stores 56 x 29 filters).
CASES = [
    (16, (56, 56), (56, 56)),
    (8, (56, 56), (56, 57)),  # same half-spectrum width (29): no resize, as in the release
    (16, (56, 56), (23, 37)),
    (16, (14, 14), (32, 20)),
    (8, (7, 7), (9, 6)),
    (8, (7, 7), (1, 1)),
]


@pytest.mark.parametrize('channels,stored,size', CASES)
def test_matches_spec_formula(channels, stored, size):
    mixer = _randomised(ExSPAM(channels, stored)).eval()
    x = torch.randn(2, *size, channels)
    with torch.no_grad():
        ours = mixer(x)
    expected = exspam_formula(x, mixer.state_dict())
    assert ours.shape == x.shape and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize('size', [(28, 28), (21, 30)])
def test_gradients_match_spec_formula(size):
    mixer = _randomised(ExSPAM(8, (28, 28)))
    x = torch.randn(2, *size, 8, requires_grad=True)
    target = torch.randn(2, *size, 8)
    (mixer(x) * target).sum().backward()
    ours = {'x': x.grad.clone()}
    ours.update({k: p.grad.clone() for k, p in mixer.named_parameters()})

    params = {k: p.detach().double().requires_grad_() for k, p in mixer.named_parameters()}
    x64 = x.detach().double().requires_grad_()
    (exspam_formula(x64, params) * target.double()).sum().backward()
    expected = {'x': x64.grad}
    expected.update({k: p.grad for k, p in params.items()})
    assert set(ours) == set(expected)
    for key in expected:
        torch.testing.assert_close(
            ours[key].double(),
            expected[key],
            atol=5e-5,
            rtol=1e-3,
            msg=lambda m, key=key: f'{key}: {m}',
        )
    assert all(mixer.filters[i].grad.abs().sum() > 0 for i in range(4))


def test_rejects_channels_not_divisible_by_heads():
    with pytest.raises(ValueError, match='divisible by num_heads'):
        ExSPAM(30, 14)


def test_cache_follows_writes_through_data():
    """EMA hooks and weight swaps write through ``param.data``, which autograd's version
    counters do not see: the cached gain must still follow the new values."""
    mixer = _randomised(ExSPAM(8, (14, 14))).eval()
    x = torch.randn(1, 10, 12, 8)
    with torch.no_grad():
        before = mixer(x)
        assert len(mixer._gain_cache) == 1
        new = torch.randn_like(mixer.filter_2)
        mixer.filter_2.data.copy_(new)
        after = mixer(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(
        after.double(), exspam_formula(x, mixer.state_dict()), atol=2e-5, rtol=1e-4
    )


def test_cache_follows_load_state_dict_and_in_place_data_ops():
    mixer = _randomised(ExSPAM(8, (14, 14))).eval()
    other = _randomised(ExSPAM(8, (14, 14))).eval()
    x = torch.randn(1, 9, 9, 8)
    with torch.no_grad():
        mixer(x)
        mixer.load_state_dict(other.state_dict())
        torch.testing.assert_close(mixer(x), other(x))
        mixer.filter_1.data.mul_(-1)  # same storage, no version bump
        torch.testing.assert_close(
            mixer(x).double(), exspam_formula(x, mixer.state_dict()), atol=2e-5, rtol=1e-4
        )


def test_cache_is_bounded_and_not_used_by_autograd():
    mixer = ExSPAM(8, (14, 14), cache_size=2).train()
    with torch.no_grad():
        for size in [(5, 5), (6, 7), (8, 9), (10, 3)]:
            mixer(torch.randn(1, *size, 8))
    assert len(mixer._gain_cache) == 2
    # With autograd on, the gain is rebuilt from the parameters (so they get gradients),
    # and the cache is neither read nor written.
    mixer._gain_cache.clear()
    mixer(torch.randn(1, 8, 9, 8)).sum().backward()
    assert len(mixer._gain_cache) == 0
    assert mixer.filter_4.grad is not None and mixer.filter_4.grad.abs().sum() > 0


def test_autocast_runs_the_transform_in_float32():
    mixer = _randomised(ExSPAM(16, (14, 14))).eval()
    x = torch.randn(1, 19, 24, 16)
    with torch.no_grad():
        full = mixer(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = mixer(x)
        # The spectral path on its own: float32 inside, the input's dtype out.
        y = torch.randn(1, 16, 19, 24, dtype=torch.bfloat16)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            filtered = mixer.modulate_spectrum(y, mixer.spectral_gain(19, 24))
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float() - full).abs().mean() < 0.05 * full.abs().mean()
    assert filtered.dtype == torch.bfloat16
    expected = torch.fft.irfft2(
        torch.fft.rfft2(y.float(), norm='ortho') * mixer.spectral_gain(19, 24),
        s=(19, 24),
        norm='ortho',
    )
    torch.testing.assert_close(filtered.float(), expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize('channels,stored,size', CASES)
def test_real_products_match_spec_formula(channels, stored, size):
    """The form ONNX export records: the filter as real products instead of torch.fft."""
    mixer = _randomised(ExSPAM(channels, stored)).eval()
    x = torch.randn(2, *size, channels)
    with torch.no_grad():
        fft = mixer(x)
        with real_products():
            ours = mixer(x)
    torch.testing.assert_close(ours, fft, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(
        ours.double(), exspam_formula(x, mixer.state_dict()), atol=2e-5, rtol=1e-4
    )


def test_real_products_switch_is_scoped():
    assert not uses_real_products()
    with real_products():
        assert uses_real_products()
        with real_products(False):
            assert not uses_real_products()
        assert uses_real_products()
    assert not uses_real_products()


def test_real_products_under_autocast_stay_float32():
    mixer = _randomised(ExSPAM(16, (14, 14))).eval()
    y = torch.randn(1, 16, 19, 24, dtype=torch.bfloat16)
    gain = mixer.spectral_gain(19, 24)
    with torch.no_grad(), real_products(), torch.autocast('cpu', dtype=torch.bfloat16):
        filtered = mixer.modulate_spectrum(y, gain)
    assert filtered.dtype == torch.bfloat16
    expected = torch.fft.irfft2(
        torch.fft.rfft2(y.float(), norm='ortho') * gain, s=(19, 24), norm='ortho'
    )
    torch.testing.assert_close(filtered.float(), expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize('traced,other', [((6, 7), (40, 36)), ((40, 36), (5, 9))])
def test_traced_mixer_serves_other_sizes(traced, other):
    """A trace records no branch on the size: traced on a small map (where eager runs the
    heads as one conv) it serves a large one (four convs in eager), and the other way round;
    traced at the stored filter size it still resizes the filters at other sizes."""
    mixer = _randomised(ExSPAM(8, (6, 7))).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the tracer's notes on Python-side shape reads
        trace = torch.jit.trace(mixer, torch.randn(2, *traced, 8))
        for size in (traced, other):
            x = torch.randn(1, *size, 8)
            torch.testing.assert_close(trace(x), mixer(x), atol=2e-6, rtol=1e-5)
