"""FLOP counting behind tools/analysis/get_flops.py (spanet_tools/analysis/flops.py), for
SPANet and SPANetV2.
"""

import math

import pytest
import torch
from torch import nn

from spanet_mm import SPAM, SPANet
from spanet_mm.models.exspam import ExSPAM
from spanet_tools.analysis.flops import (
    count_complexity,
    fft_filter_flops,
    measure,
    measurement_json,
    real_fft_filter_flops,
)
from spanet_tools.catalogue import build_backbone
from spanet_tools.reference import ReferenceSPAM

from helpers.model_sizes import SPANETV2_CLASSIFIER_PARAMS
from helpers.options import write_classifier_config


def test_flops_of_a_convolution_match_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    result = count_complexity(conv, (torch.randn(1, 3, 16, 16),))
    # One MAC per output element and kernel tap: 8 * 16 * 16 outputs x 3 * 3 * 3 taps.
    assert result.flops == 8 * 16 * 16 * 27
    assert result.params == 8 * 3 * 9 + 8
    assert result.spectral == []


@pytest.mark.parametrize('mixer_cls', [SPAM, ReferenceSPAM])
def test_flops_of_spam_match_hand_count(mixer_cls):
    channels, kernel, size = 12, 7, 16
    mixer = mixer_cls(channels, 2, (0.7, 0.8, 0.9), kernel).eval()
    result = count_complexity(mixer, (torch.randn(1, channels, size, size),))
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
    result = count_complexity(mixer, (torch.randn(1, height, width, channels),))
    pixels, head_dims = height * width, channels // 4
    # What fvcore counts for ExSPAM as implemented: query, ctx and proj_out (C x C linear
    # layers), the heads' depth-wise convs (3x3, 5x5, 7x7, 9x9 taps over head_dims channels),
    # proj's grouped 1x1 conv (each of 2C outputs sees one channel of each of the 4 heads),
    # its GroupNorm (fvcore's rough 5 per element with an affine) and its 2C -> C 1x1 conv.
    per_pixel = (
        3 * channels**2
        + head_dims * (9 + 25 + 49 + 81)
        + 2 * channels * 4
        + 5 * 2 * channels
        + 2 * channels * channels
    )
    assert result.fvcore_total == pixels * per_pixel
    # The spectral gain runs on torch.fft, which fvcore does not count: nothing to take out.
    assert {'aten::fft_rfft2', 'aten::fft_irfft2'} <= set(result.unsupported_ops)
    assert result.flops == result.fvcore_total and result.implemented_macs == 0
    (call,) = result.spectral
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
    numbers = measurement_json(
        measure(config, shape=[64], cfg_options={'model.head.num_classes': 7})
    )
    backbone = SPANet(arch=tiny_arch, out_indices=(3,))
    expected_params = sum(p.numel() for p in backbone.parameters()) + 30 * 7 + 7
    assert numbers['params'] == expected_params
    assert numbers['shape'] == [64, 64]
    assert numbers['spectral']['spectral_filter']['calls'] == sum(tiny_arch['depths'])
    # The head's 30 x 7 MACs and the pooling's 30 x 2 x 2 reads (fvcore counts one per
    # input element) are in the count; the spectral filter is not.
    bare = count_complexity(backbone.eval(), (torch.randn(1, 3, 64, 64),))
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
    counted = [count_complexity(m, (x,)).fvcore_total for m in (fused, plain)]
    # qkv and proj (4 C^2 per token) and, per image and head, 2 x 35^2 x 8 for the products.
    assert counted[0] == counted[1] == 2 * 35 * 4 * 32 * 32 + 2 * 4 * 2 * 35 * 35 * 8


def test_spanetv2_counts_like_its_reference(tiny_v2_arch):
    """The headline FLOPs and the FFT line of SPANetV2 equal those of the plain reference
    (per-head convs and FFTs, attention written with matmuls) at a size where every ExSPAM
    map has at least 32x32 positions (below, ExSPAM's merged zero-padded conv counts more)."""
    x = (torch.randn(1, 3, 256, 256),)
    ours = count_complexity(build_backbone('spanetv2', arch=tiny_v2_arch), x)
    reference = count_complexity(build_backbone('reference-v2', arch=tiny_v2_arch), x)
    assert ours.flops == reference.flops
    assert ours.fft_macs == reference.fft_macs > 0
    assert [(c.channels, c.height, c.width) for c in ours.spectral] == [(8, 64, 64), (16, 32, 32)]
