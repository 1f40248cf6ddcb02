"""Context maps behind tools/analysis/context_map.py (spanet_tools/analysis/context.py)."""

import numpy as np
import pytest
import torch

from spanet_mm import SPANet
from spanet_mm.models.exspam import ExSPAM
from spanet_tools.analysis.context import (
    context_map_figure,
    context_maps,
    exspam_head_contexts,
    to_image_size,
)
from spanet_tools.catalogue import build_backbone
from spanet_tools.images import read_rgb, to_model_input

from helpers.figures import assert_png


def test_gate_maps_sum_to_context(tiny_arch):
    model = SPANet(arch=tiny_arch).eval()
    maps = context_maps(model, torch.randn(1, 3, 64, 64), stage=2, block=1, reduce='mean')
    *gates, context = maps.panels.values()
    assert maps.mixer == 'SPAM' and len(gates) == 3 and context.shape == (1, 4, 4)
    # The channel mean is linear, so the gates' maps add up to the context's.
    assert torch.allclose(sum(gates), context, atol=1e-5)


@pytest.mark.parametrize('size', [(8, 12), (7, 10)])  # the filters' own size, and another
def test_exspam_head_contexts_rebuild_the_mixer(size):
    """The per-head filtered contexts, interleaved and mixed, modulate the query into exactly
    what ExSPAM returns: they are the contexts the mixer computes."""
    torch.manual_seed(2)
    mixer = ExSPAM(16, (8, 12)).eval()
    with torch.no_grad():
        for weight in mixer.filters:  # gains far from the initial sigmoid(~0) = 0.5
            weight.normal_(0, 2)
        x = torch.randn(2, *size, 16)
        heads = exspam_head_contexts(mixer, x)
        assert [tuple(h.shape) for h in heads] == [(2, 4, *size)] * 4
        context = mixer.proj(torch.stack(heads, dim=2).flatten(1, 2)).permute(0, 2, 3, 1)
        rebuilt = mixer.proj_out(mixer.query(x) * context)
        torch.testing.assert_close(rebuilt, mixer(x), atol=1e-6, rtol=1e-5)
        # Each head is filtered by its own gain: scaling head 2's filter changes only head 2.
        mixer.filter_2.mul_(-1)
        changed = exspam_head_contexts(mixer, x)
    assert [not torch.allclose(a, b) for a, b in zip(heads, changed)] == [False, True, False, False]


def test_context_maps_need_a_spectral_mixer(tiny_v2_arch):
    model = build_backbone('spanetv2', arch=tiny_v2_arch)
    with pytest.raises(
        TypeError,
        match=r'mixes tokens with Attention.*ExSPAM.*stage 0, '
        'stage 1',
    ):
        context_maps(model, torch.randn(1, 3, 64, 64), stage=-1)


def test_context_map_figure_spanet(tmp_path, photo_dir, tiny_arch):
    torch.manual_seed(1)
    source = SPANet(arch=tiny_arch)
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(source.state_dict(), checkpoint)
    torch.manual_seed(5)
    model = build_backbone('spanet', arch=tiny_arch, checkpoint=str(checkpoint))
    images = [read_rgb(p) for p in sorted(str(p) for p in photo_dir.glob('*.png'))]
    out = tmp_path / 'ctx' / 'context.png'
    panels = context_map_figure(model, images, str(out), size=64)
    assert_png(out)
    assert len(panels) == 2
    for maps, size in zip(panels, [(48, 72), (64, 56)]):
        assert list(maps) == ['λ = 0.7', 'λ = 0.8', 'λ = 0.9', 'aggregated context']
        for heat in maps.values():
            assert heat.shape == size
            assert heat.min() == pytest.approx(0) and heat.max() == pytest.approx(1)
    # The checkpoint's weights were used, not the seeded random ones.
    expected = context_maps(source.eval(), to_model_input(images[0], 64, crop=False))
    got = torch.from_numpy(panels[0]['aggregated context'])
    assert torch.allclose(
        got, to_image_size(expected.panels['aggregated context'], (48, 72))[0], atol=1e-6
    )


def test_context_map_figure_spanetv2(tmp_path, photo_dir, tiny_v2_arch):
    model = build_backbone('spanetv2', arch=tiny_v2_arch)
    images = [read_rgb(p) for p in sorted(str(p) for p in photo_dir.glob('*.png'))]
    out = tmp_path / 'ctx_v2.png'
    panels = context_map_figure(model, images, str(out), size=64, stage=1, reduce='absmean')
    assert_png(out)
    assert list(panels[0]) == [
        'head 1 (3x3 conv + filter)',
        'head 2 (5x5 conv + filter)',
        'head 3 (7x7 conv + filter)',
        'head 4 (9x9 conv + filter)',
        'mixed context (proj)',
    ]
    for maps, size in zip(panels, [(48, 72), (64, 56)]):
        for heat in maps.values():
            assert heat.shape == size and heat.max() == pytest.approx(1)
    # The heads see different kernels and filters: their maps differ.
    heads = list(panels[0].values())[:4]
    assert all(not np.allclose(heads[0], other) for other in heads[1:])
