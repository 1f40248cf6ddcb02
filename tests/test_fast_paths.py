"""Every fast path of SPAM and the SPANet backbone against the paper-literal model.

The fast paths: channels-last stages whose point-wise layers run as matrix products on the
NHWC view (oneDNN's fused kernels without autograd, 1x1 convs with it), with the filter on
that view in the working dtype, and the plain (contiguous) layout; eval and train mode
(gradients too); bfloat16 autocast; batch sizes 1 and 8. The yardsticks: the paper-literal
:class:`spanet_mm.reference.ReferenceSPANet` (complex FFT, ``fftshift``, three gates) and
the float64 FFT formula of Eq. 17 (``paper_filter``).
"""
import pytest
import torch
import torch.nn.functional as F
from helpers.precision import check_bfloat16_weights
from helpers.spanet_formulas import paper_filter

from spanet_mm import SPAM, SPANet
from spanet_mm.reference import ReferenceSPANet

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


# -- the token mixer ---------------------------------------------------------------------------

@pytest.mark.parametrize('layout', LAYOUTS)
def test_context_fuses_the_three_gates(layout):
    """One filter over all channels and one 1x1 conv equal the three gates of Eq. 19."""
    mixer = SPAM(24, radius=2)
    q = to_layout(torch.randn(2, 24, 17, 30), layout)
    gates = mixer.gate_outputs(q)
    assert len(gates) == 3
    torch.testing.assert_close(mixer.context(q), sum(gates), atol=1e-5, rtol=1e-5)
    chunks = q.double().split(mixer.chunk_sizes, dim=1)
    for gate, conv, chunk, balance in zip(gates, mixer.context_convs, chunks, mixer.balances):
        filtered = paper_filter(chunk, 2, [balance] * chunk.shape[1])
        expected = F.conv2d(filtered, conv.weight.double(), conv.bias.double())
        torch.testing.assert_close(gate.double(), expected, atol=1e-5, rtol=1e-5)


def _spam_by_the_paper(mixer, x):
    """Eq. 19 and the modulation, in float64, with the mixer's own weights."""
    def conv(module, t):
        return F.conv2d(t, module.weight.double(), module.bias.double(),
                        padding=module.padding, groups=module.groups)
    q = conv(mixer.dwconv[1], conv(mixer.dwconv[0], conv(mixer.proj_in, x.double())))
    chunks = q.split(mixer.chunk_sizes, dim=1)
    radius = mixer.spectral_filter.radius
    context = sum(conv(pw, paper_filter(c, radius, [b] * c.shape[1]))
                  for pw, c, b in zip(mixer.context_convs, chunks, mixer.balances))
    return conv(mixer.proj_out, q * context)


@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('batch', [1, 8])
@pytest.mark.parametrize('layout', LAYOUTS)
def test_spam_matches_paper(layout, batch, grad):
    """Every path of SPAM: inference (no autograd) and autograd, both layouts, batch 1/8."""
    mixer = SPAM(30, radius=1)
    x = torch.randn(batch, 30, 15, 22)
    with torch.set_grad_enabled(grad):
        y = mixer(to_layout(x, layout))
    assert y.requires_grad == grad and y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == 'channels_last')
    torch.testing.assert_close(y.double(), _spam_by_the_paper(mixer, x).detach(),
                               atol=1e-5, rtol=1e-4)


def test_spam_has_no_stale_weights():
    """Parameters written in place through ``.data`` (as EMA hooks do, without bumping any
    version) take effect at the next call on every path."""
    mixer = SPAM(24, radius=2)
    x = torch.randn(1, 24, 9, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        mixer(x)
        for module in (mixer.proj_in, *mixer.context_convs, mixer.proj_out):
            module.weight.data.mul_(-0.5)
            module.bias.data.add_(0.25)
        fused = mixer(x)
    with torch.enable_grad():
        tracked = mixer(x)
    expected = _spam_by_the_paper(mixer, x)
    torch.testing.assert_close(fused.double(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tracked.double(), expected.detach(), atol=1e-5, rtol=1e-4)


def test_watched_filter_is_called_as_a_module():
    """With hooks on the filters (analysis tools) every block calls its filter as a module,
    with the same features as without hooks."""
    model = SPANet(dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 2, 1])).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        plain = model(x)
        seen = []
        filters = [b.token_mixer.spectral_filter for stage in model.stages for b in stage]
        handles = [f.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
                   for f in filters]
        watched = model(x)
        for handle in handles:
            handle.remove()
    assert len(seen) == len(filters) == 5
    for a, b in zip(plain, watched):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# -- the backbone ------------------------------------------------------------------------------

@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('arch,size', [('tiny', s) for s in INPUT_SIZES] + [('s', (224, 224))])
def test_backbone_eval_matches_reference(tiny_arch, arch, size, channels_last,
                                         release_layout):
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
    models = {flag: SPANet(tiny_arch, frozen_stages=frozen, channels_last=flag)
              for flag in (True, False)}
    models[False].load_state_dict(models[True].state_dict())
    x = torch.randn(2, 3, 64, 48)
    grads = {}
    for channels_last, model in models.items():
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
