"""Fourier spectra of token mixers behind tools/analysis/spectrum.py
(spanet_tools/analysis/spectrum.py).
"""

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from spanet_tools.analysis.spectrum import (
    diagonal_profile,
    mean_log_amplitude,
    spectrum_report,
    to_nchw,
)
from spanet_tools.catalogue import build_backbone
from spanet_tools.images import read_rgb, to_model_input

from helpers.figures import assert_png


def _blurred_noise(size=32, sigma=2.0):
    noise = torch.randn(4, 8, size, size, dtype=torch.float64)
    freq = torch.fft.fftfreq(size, dtype=torch.float64)
    gauss = torch.exp(-2 * (math.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    return torch.fft.ifft2(torch.fft.fft2(noise) * gauss).real


def test_spectrum_of_low_pass_input_falls_with_frequency():
    freqs, curve = diagonal_profile(mean_log_amplitude(_blurred_noise()))
    assert freqs[0] == 0 and freqs[-1] == pytest.approx(math.pi)
    assert curve[0] == 0
    steps = torch.diff(curve)
    assert (steps < 0).float().mean() > 0.9
    assert curve[-1] < -5  # a Gaussian blur of sigma 2 removes the top frequencies


def test_spectrum_of_white_noise_is_flat():
    _, curve = diagonal_profile(mean_log_amplitude(torch.randn(8, 16, 32, 32)))
    # Between the two real-valued bins (zero and Nyquist frequency, whose log amplitude has
    # another distribution) white noise has the same expected log amplitude everywhere.
    inner = curve[1:-1]
    assert inner.max() - inner.min() < 0.4
    assert curve.abs().max() < 1


def test_tokens_and_channels_last_maps_become_nchw():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    maps = to_nchw(nn.Identity(), (tokens, (2, 3)), tokens)
    assert maps.shape == (2, 3, 2, 3)
    assert torch.equal(maps[1, 2, 1, 0], tokens[1, 3, 2])
    nhwc = torch.randn(2, 4, 5, 3)
    assert torch.equal(
        to_nchw(nn.Identity(), (nhwc,), nhwc, channels_last=True), nhwc.permute(0, 3, 1, 2)
    )


def test_spectrum_report(tmp_path, photo_dir, tiny_arch, tiny_v2_arch):
    out_dir = tmp_path / 'spectrum'
    models = {
        'spanet:s': build_backbone('spanet', arch=tiny_arch),
        'spanetv2:s18_hybrid': build_backbone('spanetv2', arch=tiny_v2_arch),
        'convnext:atto': build_backbone('convnext:atto'),
    }
    results = spectrum_report(
        models, sorted(str(p) for p in photo_dir.glob('*.png')), str(out_dir), size=64
    )

    spanet_layers = results['spanet:s']['layers']
    assert len(spanet_layers) == sum(tiny_arch['depths'])
    assert spanet_layers[0]['shape'] == [16, 16] and spanet_layers[0]['channels'] == 12
    assert results['spanet:s']['stage_ends'] == [0, 1, 3, 4]
    # SPANetV2's mixers work channels-last: ExSPAM in stages 1-2, MixAttention and
    # Attention in 3-4, each read as (B, C, H, W) with the stage's width as channels.
    v2_layers = results['spanetv2:s18_hybrid']['layers']
    assert [layer['name'].split('.')[-1] for layer in v2_layers] == ['token_mixer'] * 4
    assert [(layer['shape'], layer['channels']) for layer in v2_layers] == [
        ([16, 16], 8),
        ([8, 8], 16),
        ([4, 4], 32),
        ([2, 2], 32),
    ]
    assert len(results['convnext:atto']['layers']) == 12  # ConvNeXt-atto: 2 + 2 + 6 + 2
    for result in results.values():
        for layer in result['layers']:
            curve = np.array(layer['relative_log_amplitude'])
            assert curve[0] == 0 and np.isfinite(curve).all()
    for name in ('spectrum_curves.png', 'spectrum_maps.png', 'spectrum_high_freq.png'):
        assert_png(out_dir / name)
    saved = json.loads((out_dir / 'spectrum.json').read_text())
    assert len(saved['images']) == 2
    assert (
        saved['models']['spanet:s']['layers'][2]['relative_log_amplitude']
        == spanet_layers[2]['relative_log_amplitude']
    )
    with open(out_dir / 'spectrum_summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(spanet_layers) + len(v2_layers) + 12


def test_spectrum_of_an_exspam_layer_is_its_output_spectrum(photo_dir, tiny_v2_arch):
    """The curve of the first ExSPAM layer is that of its (B, H, W, C) output read as maps."""
    model = build_backbone('spanetv2', arch=tiny_v2_arch)
    results = spectrum_report(
        {'spanetv2:x': model},
        sorted(str(p) for p in photo_dir.glob('*.png'))[:1],
        str(photo_dir / 'out'),
        size=64,
    )
    x = to_model_input(read_rgb(sorted(str(p) for p in photo_dir.glob('*.png'))[0]), 64)
    seen = []
    handle = model.stages[0][0].token_mixer.register_forward_hook(
        lambda m, a, out: seen.append(out.permute(0, 3, 1, 2))
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    _, expected = diagonal_profile(mean_log_amplitude(seen[0]))
    got = results['spanetv2:x']['layers'][0]['relative_log_amplitude']
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-9)
