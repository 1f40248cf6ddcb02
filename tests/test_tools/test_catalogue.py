"""The backbone catalogue of the tools (spanet_tools/catalogue.py)."""

import pytest
import torch

from spanet_mm import SPAM, SPANet, SpectralPoolingFilter
from spanet_mm.models.spanetv2 import SPANetV2
from spanet_tools.catalogue import (
    FAMILIES,
    build_backbone,
    describe,
    load_weights,
    mixer_modules,
    split_name,
    without_filters,
)


def test_names_are_family_colon_arch():
    assert split_name('spanetv2:s18_pure') == ('spanetv2', 's18_pure')
    assert split_name('reference-v2:s18_hybrid') == ('reference-v2', 's18_hybrid')
    for bad in ('spanet-s', 'spanet:', 'resnet:50', 'convnext-t'):
        with pytest.raises(ValueError, match='FAMILY:ARCH'):
            split_name(bad)
    # Every family lists its archs in the help text.
    text = describe()
    assert all(f'{family}:ARCH' in text for family in FAMILIES)
    assert 's18_hybrid' in text and 'tiny' in text


def test_catalogue_builds_what_the_name_says(tiny_arch):
    model = build_backbone('spanet-cp', arch=tiny_arch)
    assert isinstance(model, SPANet) and model.with_cp and not model.training
    assert isinstance(build_backbone('spanetv2-cp:s18_pure'), SPANetV2)
    assert [f.shape[1] for f in build_backbone('convnext:atto')(torch.randn(1, 3, 64, 64))] == [
        40,
        80,
        160,
        320,
    ]  # all four stages
    with pytest.raises(ValueError, match='custom arch dict'):
        build_backbone('convnext', arch=tiny_arch)


def test_filterless_spanet_shares_every_weight():
    model = SPANet('s').eval()
    bare = without_filters(model)
    # The very same weights, and no filter left.
    assert all(a is b for a, b in zip(model.parameters(), bare.parameters()))
    assert not any(isinstance(m, SpectralPoolingFilter) for m in bare.modules())
    assert any(isinstance(m, SpectralPoolingFilter) for m in model.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(x)[0], bare(x)[0])
    with pytest.raises(TypeError, match='no SPAM'):
        without_filters(torch.nn.Conv2d(3, 3, 1))


def test_mixers_are_found_by_type(tiny_arch):
    spanet = build_backbone('spanet', arch=tiny_arch)
    found = mixer_modules(spanet, 'spanet')
    assert len(found) == sum(tiny_arch['depths']) and all(isinstance(m, SPAM) for _, m in found)
    convnext = build_backbone('convnext:atto')
    assert all(n.endswith('.depthwise_conv') for n, _ in mixer_modules(convnext, 'convnext'))
    with pytest.raises(ValueError, match='No token mixer'):
        mixer_modules(torch.nn.Conv2d(3, 3, 1), 'spanet')


def test_other_backbones_load_mmpretrain_checkpoints(tmp_path):
    source = build_backbone('convnext:atto')
    path = tmp_path / 'classifier.pth'
    # An MMPretrain classifier's checkpoint: backbone keys under 'backbone.', plus a head.
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 320)
    torch.save(dict(state_dict=state), path)
    torch.manual_seed(3)
    target = build_backbone('convnext:atto', checkpoint=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_missing_checkpoint_is_named(tiny_arch):
    from spanet_mm.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match='No checkpoint file at .*nowhere.pth'):
        load_weights(SPANet(tiny_arch), 'nowhere.pth')
