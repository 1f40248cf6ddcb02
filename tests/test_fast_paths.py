"""Every fast path of SPANet against the paper-exact formulas.

The fast paths: the spectral filter's low-rank real form on contiguous (NCHW) and on
channels-last (NHWC) data, the backbone run channels-last or not, in eval and train mode
(gradients too), and under bfloat16 autocast. The yardsticks: the float64 FFT formula of
Eq. 17 (``paper_filter`` of tests/conftest.py) and the paper-literal
:class:`spanet_mm.reference.ReferenceSPANet` (complex FFT, ``fftshift``, three gates).
"""
import pytest
import torch

from spanet_mm import SPAM, SPANet, SpectralPoolingFilter
from spanet_mm.reference import ReferenceSPANet
from conftest import paper_filter

# Input sizes of issue 2 (non-square and odd included); 800x1216 is the detection size.
INPUT_SIZES = [(333, 517), (97, 211), (32, 32)]
# Feature sizes the filter meets at those inputs, plus sizes smaller than the disk.
FEATURE_SIZES = [(200, 304), (84, 130), (21, 33), (25, 53), (8, 8), (11, 17), (4, 4),
                 (3, 5), (2, 2), (1, 1)]
LAYOUTS = ['contiguous', 'channels_last']


def to_layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x


def paired_models(arch, release_layout, channels_last=True, **kwargs):
    """Our SPANet and the paper-literal reference with the same weights."""
    model = SPANet(arch, **kwargs)
    model.channels_last = channels_last
    model.channels_last_min_area = 0  # every stage in the layout under test
    reference = ReferenceSPANet(**SPANet.resolve_arch(arch))
    reference.load_state_dict(release_layout(model.state_dict(), spf_masks=False))
    return model, reference


# -- the filter ------------------------------------------------------------------------------

@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('size', FEATURE_SIZES)
@pytest.mark.parametrize('radius', [1, 2, 2.5])
def test_filter_layouts_match_paper(size, radius, layout):
    balances = [0.7] * 3 + [0.8] * 3 + [0.9] * 3
    x = torch.randn(2, len(balances), *size)
    y = SpectralPoolingFilter(radius, balances)(to_layout(x, layout))
    torch.testing.assert_close(y.double(), paper_filter(x, radius, balances),
                               atol=2e-6, rtol=1e-5)
    # The output keeps the input's memory format (channels-last data stays so).
    assert y.is_contiguous(memory_format=torch.channels_last) == (
        to_layout(x, layout).is_contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize('layout', LAYOUTS)
def test_filter_gradient_layouts_match_paper(layout):
    balances = [0.7, 0.8, 0.9, 0.9]
    x = torch.randn(2, 4, 13, 22)
    xl = to_layout(x, layout).requires_grad_()
    weight = torch.randn(2, 4, 13, 22)
    (SpectralPoolingFilter(2, balances)(xl) * weight).sum().backward()
    x64 = x.detach().double().requires_grad_()
    (paper_filter(x64, 2, balances) * weight).sum().backward()
    torch.testing.assert_close(xl.grad.double(), x64.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_filter_bfloat16_autocast_runs_in_float32(layout):
    balances = [0.7, 0.8, 0.9]
    x = torch.randn(1, 3, 19, 28).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = SpectralPoolingFilter(2, balances)(to_layout(x, layout))
    assert y.dtype == torch.bfloat16
    # The spectral step sees the bfloat16 values and computes in float32: only the final
    # rounding to bfloat16 separates it from the exact result.
    expected = paper_filter(x.float(), 2, balances)
    torch.testing.assert_close(y.double(), expected.bfloat16().double(), atol=1e-2,
                               rtol=8e-3)


def test_context_fuses_the_three_gates():
    """One filter over all channels and one 1x1 conv equal the three gates of Eq. 19."""
    mixer = SPAM(24, radius=2)
    query = torch.randn(2, 24, 17, 30)
    for layout in LAYOUTS:
        q = to_layout(query, layout)
        gates = mixer.gate_outputs(q)
        assert len(gates) == 3
        torch.testing.assert_close(mixer.context(q), sum(gates), atol=1e-5, rtol=1e-5)
        chunks = query.double().split(mixer.chunk_sizes, dim=1)
        for gate, conv, chunk, balance in zip(gates, mixer.context_convs, chunks,
                                              mixer.balances):
            filtered = paper_filter(chunk, 2, [balance] * chunk.shape[1])
            expected = torch.nn.functional.conv2d(filtered, conv.weight.double(),
                                                  conv.bias.double())
            torch.testing.assert_close(gate.double(), expected, atol=1e-5, rtol=1e-5)


# -- the backbone ----------------------------------------------------------------------------

@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('size', INPUT_SIZES)
def test_backbone_eval_matches_reference(tiny_arch, size, channels_last, release_layout):
    model, reference = paired_models(tiny_arch, release_layout, channels_last)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    for a, b in zip(ours, theirs):
        assert a.is_contiguous()
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_small_at_detection_size_matches_reference(release_layout):
    model, reference = paired_models('s', release_layout)
    x = torch.randn(1, 3, 800, 1216)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _gradients(model, x, rename=None):
    x = x.clone().requires_grad_()
    outs = model(x)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return outs, x.grad, rename(grads) if rename else grads


@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('size', [(97, 211), (32, 32)])
def test_backbone_train_matches_reference(tiny_arch, size, channels_last, release_layout):
    """Train mode: same features, same input and weight gradients."""
    model, reference = paired_models(tiny_arch, release_layout, channels_last)
    x = torch.randn(2, 3, *size)
    ours, ours_dx, ours_grads = _gradients(
        model.train(), x, lambda g: release_layout(g, spf_masks=False))
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
    models = {flag: SPANet(tiny_arch, frozen_stages=frozen) for flag in (True, False)}
    models[False].load_state_dict(models[True].state_dict())
    x = torch.randn(2, 3, 64, 48)
    grads = {}
    for channels_last, model in models.items():
        model.channels_last = channels_last
        model.channels_last_min_area = 0
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
        grads[channels_last] = {n: p.grad for n, p in model.named_parameters()
                                if p.grad is not None}
    assert sorted(grads[True]) == sorted(grads[False])
    assert f'stages.{frozen}.0.norm1.weight' in grads[True]
    for name, grad in grads[True].items():
        torch.testing.assert_close(grad, grads[False][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize('channels_last', [True, False])
def test_backbone_bfloat16_autocast_matches_reference(tiny_arch, channels_last,
                                                      release_layout):
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
        assert (a.float() - e).abs().mean() < 0.05
        assert (a.float() - b.float()).abs().mean() < 0.05


def test_filter_uses_both_forms_at_these_sizes():
    """FEATURE_SIZES exercise both the dense (small maps) and separable (large) forms."""
    spf = SpectralPoolingFilter(2, [0.7])
    dense = {size: spf._build_operators(*size, torch.device('cpu')).basis_2d is not None
             for size in FEATURE_SIZES}
    assert dense[(8, 8)] and dense[(21, 33)] and not dense[(200, 304)]
    assert not dense[(25, 53)] and not dense[(84, 130)]
