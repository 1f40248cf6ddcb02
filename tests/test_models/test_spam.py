"""SPAM (spanet_mm/models/spam.py): its fast paths against the paper's formula."""

import pytest
import torch
import torch.nn.functional as F

from spanet_mm import SPAM, SPANet

from helpers.spanet_formulas import paper_filter

LAYOUTS = ['contiguous', 'channels_last']


def to_layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x


def _spam_by_the_paper(mixer, x):
    """Eq. 19 and the modulation, in float64, with the mixer's own weights."""

    def conv(module, t):
        return F.conv2d(
            t,
            module.weight.double(),
            module.bias.double(),
            padding=module.padding,
            groups=module.groups,
        )

    q = conv(mixer.dwconv[1], conv(mixer.dwconv[0], conv(mixer.proj_in, x.double())))
    chunks = q.split(mixer.chunk_sizes, dim=1)
    radius = mixer.spectral_filter.radius
    context = sum(
        conv(pw, paper_filter(c, radius, [b] * c.shape[1]))
        for pw, c, b in zip(mixer.context_convs, chunks, mixer.balances)
    )
    return conv(mixer.proj_out, q * context)


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
    torch.testing.assert_close(
        y.double(), _spam_by_the_paper(mixer, x).detach(), atol=1e-5, rtol=1e-4
    )


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
        handles = [
            f.register_forward_hook(lambda m, i, o: seen.append(i[0].shape)) for f in filters
        ]
        watched = model(x)
        for handle in handles:
            handle.remove()
    assert len(seen) == len(filters) == 5
    for a, b in zip(plain, watched):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
