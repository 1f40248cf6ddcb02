"""The analysis behind tools/analysis/get_flops.py, spectrum.py and context_map.py
(spanet_mm.analysis), for SPANet and SPANetV2."""
import csv
import json
import math

import numpy as np
import pytest
from helpers.model_sizes import SPANETV2_CLASSIFIER_PARAMS
from helpers.options import write_classifier_config
import torch
from skimage import io
from torch import nn

from spanet_mm import SPAM, SPANet
from spanet_mm.analysis.context import (context_map_figure, context_maps, exspam_head_contexts,
                                        to_image_size)
from spanet_mm.analysis.flops import (count_complexity, fft_filter_flops, measure,
                                      measurement_json, real_fft_filter_flops)
from spanet_mm.analysis.spectrum import (diagonal_profile, mean_log_amplitude, spectrum_report,
                                         to_nchw)
from spanet_mm.catalogue import build_backbone
from spanet_mm.images import read_rgb, to_model_input
from spanet_mm.models.exspam import ExSPAM
from spanet_mm.reference import ReferenceSPAM

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path, min_side=50):
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    image = io.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side
    # A figure, not a blank canvas.
    assert image[..., :3].std() > 10


@pytest.fixture
def photo_dir(tmp_path):
    """Two small 'photographs' of different sizes: smooth shapes plus a little noise."""
    rng = np.random.default_rng(0)
    folder = tmp_path / 'photos'
    folder.mkdir()
    for i, (h, w) in enumerate([(48, 72), (64, 56)]):
        yy, xx = np.mgrid[:h, :w]
        disk = ((yy - h / 2)**2 + (xx - w / 3)**2 < (h / 4)**2).astype(float)
        image = np.stack([disk, xx / w, yy / h], axis=-1) * 200 + rng.uniform(0, 40, (h, w, 3))
        io.imsave(str(folder / f'photo{i}.png'), image.astype(np.uint8), check_contrast=False)
    return folder


def photos(folder):
    return [str(folder / 'photo0.png'), str(folder / 'photo1.png')]


# ----------------------------------------------------------------------------- FLOPs


def test_flops_of_a_convolution_match_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    result = count_complexity(conv, (torch.randn(1, 3, 16, 16), ))
    # One MAC per output element and kernel tap: 8 * 16 * 16 outputs x 3 * 3 * 3 taps.
    assert result.flops == 8 * 16 * 16 * 27
    assert result.params == 8 * 3 * 9 + 8
    assert result.spectral == []


@pytest.mark.parametrize('mixer_cls', [SPAM, ReferenceSPAM])
def test_flops_of_spam_match_hand_count(mixer_cls):
    channels, kernel, size = 12, 7, 16
    mixer = mixer_cls(channels, 2, (0.7, 0.8, 0.9), kernel).eval()
    result = count_complexity(mixer, (torch.randn(1, channels, size, size), ))
    pixels = size * size
    # proj_in, the three context convs (12 input channels in all) and proj_out are 1x1
    # convs C -> C; the separable depth-wise pair has 2 * k taps per channel.
    assert result.flops == pixels * (3 * channels * channels + 2 * kernel * channels)
    # The paper's FFT filter over all 12 channels: 2 complex FFTs of 256 points plus the mask
    # product, 12 * (10 * 256 * 8 + 2 * 256) real FLOPs, halved into MACs.
    assert result.fft_macs == pytest.approx(12 * (10 * 256 * 8 + 512) / 2)
    assert sum(call.channels for call in result.spectral) == channels
    assert result.flops + result.implemented_macs == result.fvcore_total
    if mixer_cls is ReferenceSPAM:
        # fvcore has no handle for torch.fft: the FFT implementation counts as free.
        assert result.implemented_macs == 0
        assert 'aten::fft_fft2' in result.unsupported_ops
    else:
        assert result.implemented_macs > 0


def test_flops_of_exspam_match_hand_count():
    # A 32x32 map: ExSPAM runs each head's own depth-wise conv there (on smaller maps it runs
    # one zero-padded 9x9 conv for all heads, which fvcore counts at 81 taps a channel).
    channels, height, width = 16, 32, 32
    mixer = ExSPAM(channels, (height, width)).eval()
    result = count_complexity(mixer, (torch.randn(1, height, width, channels), ))
    pixels, head_dims = height * width, channels // 4
    # What fvcore counts for ExSPAM as implemented: query, ctx and proj_out (C x C linear
    # layers), the heads' depth-wise convs (3x3, 5x5, 7x7, 9x9 taps over head_dims channels),
    # proj's grouped 1x1 conv (each of 2C outputs sees one channel of each of the 4 heads),
    # its GroupNorm (fvcore's rough 5 per element with an affine) and its 2C -> C 1x1 conv.
    per_pixel = (3 * channels**2 + head_dims * (9 + 25 + 49 + 81) + 2 * channels * 4
                 + 5 * 2 * channels + 2 * channels * channels)
    assert result.fvcore_total == pixels * per_pixel
    # The spectral gain runs on torch.fft, which fvcore does not count: nothing to take out.
    assert {'aten::fft_rfft2', 'aten::fft_irfft2'} <= set(result.unsupported_ops)
    assert result.flops == result.fvcore_total and result.implemented_macs == 0
    (call, ) = result.spectral
    assert (call.batch, call.channels, call.height, call.width) == (1, channels, height, width)
    # rfft2 + irfft2 of 1024 points per channel (2.5 N log2 N real FLOPs each) and the real
    # gain on the 32 x 17 complex half spectrum (2 real FLOPs per bin), halved into MACs.
    points = height * width
    per_image = channels * (5 * points * math.log2(points) + 2 * height * (width // 2 + 1))
    assert result.fft_macs == pytest.approx(per_image / 2)


def test_fft_formulas():
    assert fft_filter_flops(1, 1, 1) == 0
    assert fft_filter_flops(3, 4, 8) == pytest.approx(3 * (10 * 32 * 5 + 64))
    assert real_fft_filter_flops(1, 1, 1) == 0
    # A real FFT costs half a complex one; the gain acts on the half spectrum.
    assert real_fft_filter_flops(3, 4, 8) == pytest.approx(3 * (5 * 32 * 5 + 2 * 4 * 5))


@pytest.mark.slow
def test_get_flops_reproduces_spanet_s_complexity():
    measured = measure(model='spanet:s')
    result = measured.result
    assert measured.shape == (224, 224)
    assert result.flops == pytest.approx(4.6e9, rel=0.03)  # Table 2: 4.6 G
    assert result.params == pytest.approx(29e6, rel=0.03)  # Table 2: 29 M
    assert len(result.spectral) == 24  # one SPF per block


# The authors' README: MACs at 224 (S36 and M36/B36 are in the README's table, measured by
# tools/analysis/get_flops.py; counting them here would add minutes).
@pytest.mark.slow
@pytest.mark.parametrize('arch,macs', [('s18_pure', 4.2e9), ('s18_hybrid', 4.2e9)])
def test_get_flops_reproduces_spanetv2_complexity(arch, macs):
    measured = measure(model=f'spanetv2:{arch}')
    result = measured.result
    assert measured.model == 'ImageClassifier'
    assert result.params == SPANETV2_CLASSIFIER_PARAMS[arch]  # the authors' classifier
    assert result.flops == pytest.approx(macs, rel=0.03)
    exspam_blocks = 18 if arch.endswith('pure') else 6  # hybrids: ExSPAM in stages 1-2
    assert len(result.spectral) == exspam_blocks
    assert all(call.kind.key == 'exspam_fft' for call in result.spectral)


def test_get_flops_on_a_classifier_config(tmp_path, tiny_arch):
    config = write_classifier_config(tmp_path / 'cls.py', tiny_arch, num_classes=10)
    # --cfg-options, as argparse's DictAction parses them: 7 classes instead of 10.
    numbers = measurement_json(measure(config, shape=[64],
                                       cfg_options={'model.head.num_classes': 7}))
    backbone = SPANet(arch=tiny_arch, out_indices=(3, ))
    expected_params = sum(p.numel() for p in backbone.parameters()) + 30 * 7 + 7
    assert numbers['params'] == expected_params
    assert numbers['shape'] == [64, 64]
    assert numbers['spectral']['spectral_filter']['calls'] == sum(tiny_arch['depths'])
    # The head's 30 x 7 MACs and the pooling's 30 x 2 x 2 reads (fvcore counts one per
    # input element) are in the count; the spectral filter is not.
    bare = count_complexity(backbone.eval(), (torch.randn(1, 3, 64, 64), ))
    assert numbers['flops'] == bare.flops + 210 + 120
    assert numbers['flops_with_fft'] == pytest.approx(numbers['flops'] + bare.fft_macs)


@pytest.mark.slow
def test_get_flops_on_a_detector_config(tmp_path, tiny_arch):
    config = tmp_path / 'det.py'
    config.write_text(f"""
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='SPANet', arch={tiny_arch!r}),
             neck=dict(in_channels={tiny_arch['embed_dims']!r}, start_level=1))
""")
    config = str(config)
    measured = measure(config, shape=(64, 96))
    result = measured.result
    assert measured.model == 'RetinaNet' and measured.shape == (64, 96)
    assert len(result.spectral) == sum(tiny_arch['depths'])
    # Stage 1 runs at stride 4 of the input.
    assert (result.spectral[0].height, result.spectral[0].width) == (16, 24)
    # Backbone, FPN and both RetinaNet heads are counted.
    assert result.flops > 1e8


def test_measure_rejects_ambiguous_requests():
    with pytest.raises(ValueError, match='either a config or a model name'):
        measure()
    with pytest.raises(ValueError, match='backbone_only goes with a model name'):
        measure('some.py', backbone_only=True)


# --------------------------------------------------------------------------- spectrum


def _blurred_noise(size=32, sigma=2.0):
    noise = torch.randn(4, 8, size, size, dtype=torch.float64)
    freq = torch.fft.fftfreq(size, dtype=torch.float64)
    gauss = torch.exp(-2 * (math.pi * sigma)**2 * (freq[:, None]**2 + freq[None, :]**2))
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
    assert torch.equal(to_nchw(nn.Identity(), (nhwc, ), nhwc, channels_last=True),
                       nhwc.permute(0, 3, 1, 2))


def test_spectrum_report(tmp_path, photo_dir, tiny_arch, tiny_v2_arch):
    out_dir = tmp_path / 'spectrum'
    models = {'spanet:s': build_backbone('spanet', arch=tiny_arch),
              'spanetv2:s18_hybrid': build_backbone('spanetv2', arch=tiny_v2_arch),
              'convnext:atto': build_backbone('convnext:atto')}
    results = spectrum_report(models, photos(photo_dir), str(out_dir), size=64)

    spanet_layers = results['spanet:s']['layers']
    assert len(spanet_layers) == sum(tiny_arch['depths'])
    assert spanet_layers[0]['shape'] == [16, 16] and spanet_layers[0]['channels'] == 12
    assert results['spanet:s']['stage_ends'] == [0, 1, 3, 4]
    # SPANetV2's mixers work channels-last: ExSPAM in stages 1-2, MixAttention and
    # Attention in 3-4, each read as (B, C, H, W) with the stage's width as channels.
    v2_layers = results['spanetv2:s18_hybrid']['layers']
    assert [layer['name'].split('.')[-1] for layer in v2_layers] == ['token_mixer'] * 4
    assert [(layer['shape'], layer['channels']) for layer in v2_layers] == [
        ([16, 16], 8), ([8, 8], 16), ([4, 4], 32), ([2, 2], 32)]
    assert len(results['convnext:atto']['layers']) == 12  # ConvNeXt-atto: 2 + 2 + 6 + 2
    for result in results.values():
        for layer in result['layers']:
            curve = np.array(layer['relative_log_amplitude'])
            assert curve[0] == 0 and np.isfinite(curve).all()
    for name in ('spectrum_curves.png', 'spectrum_maps.png', 'spectrum_high_freq.png'):
        assert_png(out_dir / name)
    saved = json.loads((out_dir / 'spectrum.json').read_text())
    assert len(saved['images']) == 2
    assert saved['models']['spanet:s']['layers'][2]['relative_log_amplitude'] == \
        spanet_layers[2]['relative_log_amplitude']
    with open(out_dir / 'spectrum_summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(spanet_layers) + len(v2_layers) + 12


def test_spectrum_of_an_exspam_layer_is_its_output_spectrum(photo_dir, tiny_v2_arch):
    """The curve of the first ExSPAM layer is that of its (B, H, W, C) output read as maps."""
    model = build_backbone('spanetv2', arch=tiny_v2_arch)
    results = spectrum_report({'spanetv2:x': model}, photos(photo_dir)[:1],
                              str(photo_dir / 'out'), size=64)
    x = to_model_input(read_rgb(photos(photo_dir)[0]), 64)
    seen = []
    handle = model.stages[0][0].token_mixer.register_forward_hook(
        lambda m, a, out: seen.append(out.permute(0, 3, 1, 2)))
    with torch.no_grad():
        model(x)
    handle.remove()
    _, expected = diagonal_profile(mean_log_amplitude(seen[0]))
    got = results['spanetv2:x']['layers'][0]['relative_log_amplitude']
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-9)


# ------------------------------------------------------------------------ context map


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
    assert [not torch.allclose(a, b) for a, b in zip(heads, changed)] == [
        False, True, False, False]


def test_context_maps_need_a_spectral_mixer(tiny_v2_arch):
    model = build_backbone('spanetv2', arch=tiny_v2_arch)
    with pytest.raises(TypeError, match=r'mixes tokens with Attention.*ExSPAM.*stage 0, '
                       'stage 1'):
        context_maps(model, torch.randn(1, 3, 64, 64), stage=-1)


def test_context_map_figure_spanet(tmp_path, photo_dir, tiny_arch):
    torch.manual_seed(1)
    source = SPANet(arch=tiny_arch)
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(source.state_dict(), checkpoint)
    torch.manual_seed(5)
    model = build_backbone('spanet', arch=tiny_arch, checkpoint=str(checkpoint))
    images = [read_rgb(p) for p in photos(photo_dir)]
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
    assert torch.allclose(got, to_image_size(expected.panels['aggregated context'],
                                             (48, 72))[0], atol=1e-6)


def test_context_map_figure_spanetv2(tmp_path, photo_dir, tiny_v2_arch):
    model = build_backbone('spanetv2', arch=tiny_v2_arch)
    images = [read_rgb(p) for p in photos(photo_dir)]
    out = tmp_path / 'ctx_v2.png'
    panels = context_map_figure(model, images, str(out), size=64, stage=1, reduce='absmean')
    assert_png(out)
    assert list(panels[0]) == [
        'head 1 (3x3 conv + filter)', 'head 2 (5x5 conv + filter)',
        'head 3 (7x7 conv + filter)', 'head 4 (9x9 conv + filter)', 'mixed context (proj)']
    for maps, size in zip(panels, [(48, 72), (64, 56)]):
        for heat in maps.values():
            assert heat.shape == size and heat.max() == pytest.approx(1)
    # The heads see different kernels and filters: their maps differ.
    heads = list(panels[0].values())[:4]
    assert all(not np.allclose(heads[0], other) for other in heads[1:])


def test_fused_attention_counts_as_its_matrix_products():
    """SPANetV2's Attention runs F.scaled_dot_product_attention; it counts as the same
    attention written with matmuls (the authors' code), which fvcore counts."""
    from spanet_mm.models.attention import Attention

    class MatmulAttention(Attention):
        def attend(self, q, k, v, height, width):
            weights = (q @ k.transpose(-2, -1) * self.head_dims**-0.5).softmax(-1)
            return (weights @ v).transpose(1, 2).reshape(q.shape[0], height, width, -1)

    fused, plain = Attention(32, head_dims=8).eval(), MatmulAttention(32, head_dims=8).eval()
    x = torch.randn(2, 5, 7, 32)
    counted = [count_complexity(m, (x, )).fvcore_total for m in (fused, plain)]
    # qkv and proj (4 C^2 per token) and, per image and head, 2 x 35^2 x 8 for the products.
    assert counted[0] == counted[1] == 2 * 35 * 4 * 32 * 32 + 2 * 4 * 2 * 35 * 35 * 8


def test_spanetv2_counts_like_its_reference(tiny_v2_arch):
    """The headline FLOPs and the FFT line of SPANetV2 equal those of the plain reference
    (per-head convs and FFTs, attention written with matmuls) at a size where every ExSPAM
    map has at least 32x32 positions (below, ExSPAM's merged zero-padded conv counts more)."""
    x = (torch.randn(1, 3, 256, 256), )
    ours = count_complexity(build_backbone('spanetv2', arch=tiny_v2_arch), x)
    reference = count_complexity(build_backbone('reference-v2', arch=tiny_v2_arch), x)
    assert ours.flops == reference.flops
    assert ours.fft_macs == reference.fft_macs > 0
    assert [(c.channels, c.height, c.width) for c in ours.spectral] == [(8, 64, 64),
                                                                       (16, 32, 32)]
