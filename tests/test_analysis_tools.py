"""The analysis tools (tools/analysis/get_flops.py, spectrum.py, context_map.py, benchmark.py)."""
import csv
import importlib.util
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch
from skimage import io
from torch import nn

from spanet_mm import SPAM, SPANet, SpectralPoolingFilter
from spanet_mm.analysis.common import image_paths, load_backbone_checkpoint, to_model_input
from spanet_mm.analysis.context import context_maps
from spanet_mm.analysis.flops import count_complexity, fft_filter_flops
from spanet_mm.analysis.spectrum import diagonal_profile, mean_log_amplitude, to_nchw
from spanet_mm.reference import ReferenceSPAM

TOOLS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'analysis')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'analysis_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    return str(folder)


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


def test_fft_formula():
    assert fft_filter_flops(1, 1, 1) == 0
    assert fft_filter_flops(3, 4, 8) == pytest.approx(3 * (10 * 32 * 5 + 64))


@pytest.mark.slow
def test_get_flops_reproduces_spanet_s_complexity(capsys):
    measured = load_tool('get_flops').main(['--arch', 's'])
    result = measured['result']
    assert measured['shape'] == (224, 224)
    assert result.flops == pytest.approx(4.6e9, rel=0.03)  # Table 2: 4.6 G
    assert result.params == pytest.approx(29e6, rel=0.03)  # Table 2: 29 M
    assert len(result.spectral) == 24  # one SPF per block
    out = capsys.readouterr().out
    assert 'Spectral filter, 24 SPF calls' in out and 'as the paper computes it' in out


def _write_config(path, body):
    path.write_text(body)
    return str(path)


def test_get_flops_on_a_classifier_config(tmp_path, tiny_arch):
    config = _write_config(tmp_path / 'cls.py', f"""
default_scope = 'mmpretrain'
custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)
model = dict(type='ImageClassifier',
             backbone=dict(type='SPANet', arch={tiny_arch!r}, out_indices=(3, )),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=10, in_channels=30,
                       loss=dict(type='CrossEntropyLoss')))
""")
    out_json = tmp_path / 'flops.json'
    load_tool('get_flops').main([config, '--shape', '64', '--json', str(out_json)])
    numbers = json.loads(out_json.read_text())
    backbone = SPANet(arch=tiny_arch, out_indices=(3, ))
    expected_params = sum(p.numel() for p in backbone.parameters()) + 30 * 10 + 10
    assert numbers['params'] == expected_params
    assert numbers['shape'] == [64, 64]
    assert numbers['spectral_filter']['calls'] == sum(tiny_arch['depths'])
    # The head's 30 x 10 MACs and the pooling's 30 x 2 x 2 reads (fvcore counts one per
    # input element) are in the count; the spectral filter is not.
    bare = count_complexity(backbone.eval(), (torch.randn(1, 3, 64, 64), ))
    assert numbers['flops'] == bare.flops + 300 + 120
    assert numbers['flops_with_fft_filter'] == pytest.approx(numbers['flops'] + bare.fft_macs)


@pytest.mark.slow
def test_get_flops_on_a_detector_config(tmp_path, tiny_arch):
    config = _write_config(tmp_path / 'det.py', f"""
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['spanet_mm'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='SPANet', arch={tiny_arch!r}),
             neck=dict(in_channels={tiny_arch['embed_dims']!r}, start_level=1))
""")
    measured = load_tool('get_flops').main([config, '--shape', '64', '96'])
    result = measured['result']
    assert measured['model'] == 'RetinaNet' and measured['shape'] == (64, 96)
    assert len(result.spectral) == sum(tiny_arch['depths'])
    # Stage 1 runs at stride 4 of the input.
    assert (result.spectral[0].height, result.spectral[0].width) == (16, 24)
    # Backbone, FPN and both RetinaNet heads are counted.
    assert result.flops > 1e8


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


def test_tokens_are_reshaped_to_maps():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    maps = to_nchw(nn.Identity(), (tokens, (2, 3)), tokens)
    assert maps.shape == (2, 3, 2, 3)
    assert torch.equal(maps[1, 2, 1, 0], tokens[1, 3, 2])


@pytest.mark.slow
def test_spectrum_tool(tmp_path, photo_dir, tiny_arch):
    out_dir = tmp_path / 'spectrum'
    results = load_tool('spectrum').main(
        ['--models', 'spanet-s', 'convnext-t', '--images', photo_dir, '--size', '64',
         '--out-dir', str(out_dir)], archs={'spanet-s': tiny_arch})
    spanet_layers = results['spanet-s']['layers']
    assert len(spanet_layers) == sum(tiny_arch['depths'])
    assert spanet_layers[0]['shape'] == [16, 16] and spanet_layers[0]['channels'] == 12
    assert len(results['convnext-t']['layers']) == 18  # ConvNeXt-T: 3 + 3 + 9 + 3 blocks
    assert results['spanet-s']['stage_ends'] == [0, 1, 3, 4]
    for layer in spanet_layers:
        curve = np.array(layer['relative_log_amplitude'])
        assert curve[0] == 0 and np.isfinite(curve).all()
    for name in ('spectrum_curves.png', 'spectrum_maps.png', 'spectrum_high_freq.png'):
        assert_png(out_dir / name)
    saved = json.loads((out_dir / 'spectrum.json').read_text())
    assert len(saved['images']) == 2
    assert saved['models']['spanet-s']['layers'][2]['relative_log_amplitude'] == \
        spanet_layers[2]['relative_log_amplitude']
    with open(out_dir / 'spectrum_summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(spanet_layers) + 18


def test_other_backbones_load_mmpretrain_checkpoints(tmp_path):
    from mmpretrain.models.backbones import ConvNeXt
    source = ConvNeXt(arch='atto')
    path = tmp_path / 'classifier.pth'
    # An MMPretrain classifier's checkpoint: backbone keys under 'backbone.', plus a head.
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 320)
    torch.save(dict(state_dict=state), path)
    torch.manual_seed(3)
    target = ConvNeXt(arch='atto')
    load_backbone_checkpoint(target, str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_default_images_are_shipped_photographs():
    paths = image_paths()
    assert len(paths) >= 3 and all(osp.isfile(p) for p in paths)


# ------------------------------------------------------------------------ context map


def test_gate_maps_sum_to_context(tiny_arch):
    model = SPANet(arch=tiny_arch).eval()
    maps = context_maps(model, torch.randn(1, 3, 64, 64), stage=2, block=1, reduce='mean')
    assert len(maps.gates) == 3 and maps.context.shape == (1, 4, 4)
    # The channel mean is linear, so the gates' maps add up to the context's.
    assert torch.allclose(sum(maps.gates), maps.context, atol=1e-5)


def test_context_map_tool(tmp_path, photo_dir, tiny_arch):
    torch.manual_seed(1)
    source = SPANet(arch=tiny_arch)
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(source.state_dict(), checkpoint)
    out = tmp_path / 'ctx' / 'context.png'
    panels = load_tool('context_map').main(
        ['--images', photo_dir, '--size', '64', '--checkpoint', str(checkpoint), '--out',
         str(out), '--seed', '5'], arch=tiny_arch)
    assert_png(out)
    assert len(panels) == 2
    sizes = [(48, 72), (64, 56)]  # photo0, photo1
    for maps, size in zip(panels, sizes):
        assert list(maps) == ['λ = 0.7', 'λ = 0.8', 'λ = 0.9', 'aggregated context']
        for heat in maps.values():
            assert heat.shape == size
            assert heat.min() == pytest.approx(0) and heat.max() == pytest.approx(1)
    # The checkpoint's weights were used, not the seeded random ones.
    image = io.imread(osp.join(photo_dir, 'photo0.png'))
    expected = context_maps(source.eval(), to_model_input(image, 64, crop=False)).context
    got = torch.from_numpy(panels[0]['aggregated context'])
    from spanet_mm.analysis.context import to_image_size
    assert torch.allclose(got, to_image_size(expected, (48, 72))[0], atol=1e-6)


# -- benchmark.py ----------------------------------------------------------------------------

def test_benchmark_pairs_each_model_with_its_filterless_self():
    bench = load_tool('benchmark')
    order = bench.timing_order(['spanet:s', 'reference:s', 'spanet-nofilter:s', 'convnext-t',
                                'spanet-nofilter:m'])
    assert order == ['spanet:s', 'spanet-nofilter:s', 'reference:s', 'convnext-t',
                     'spanet-nofilter:m']
    model = SPANet('s').eval()
    bare = bench.without_filters(model)
    # The very same weights, and no filter left.
    assert all(a is b for a, b in zip(model.parameters(), bare.parameters()))
    assert not any(isinstance(m, SpectralPoolingFilter) for m in bare.modules())
    assert any(isinstance(m, SpectralPoolingFilter) for m in model.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(x)[0], bare(x)[0])


def test_benchmark_tool(tmp_path, capsys):
    bench = load_tool('benchmark')
    out = tmp_path / 'bench.json'
    bench.main(['--models', 'spanet:s', 'reference:s', 'spanet-nofilter:s', '--sizes', '64x96',
                '--mode', 'forward', 'train', '--rounds', '3', '--warmup', '1', '--json',
                str(out)])
    table = capsys.readouterr().out
    results = json.loads(out.read_text())['results']
    assert {(r['model'], r['mode']) for r in results} == {
        (m, mode) for m in ('spanet:s', 'reference:s', 'spanet-nofilter:s')
        for mode in ('forward', 'train')}
    for r in results:
        assert (r['height'], r['width'], r['rounds']) == (64, 96, 3)
        assert len(r['times_ms']) == 3 and r['min_ms'] <= r['median_ms'] <= r['max_ms']
    share = [r for r in results if (r['model'], r['mode']) == ('spanet:s', 'forward')][0]
    # The hooks' share of each timed forward: a fraction, one per round.
    assert len(share['filter_share']) == 3
    assert all(0 < s < 1 for s, _ in share['filter_share'])
    assert 'spectral filter share of spanet:s forward 64x96 batch 1 (with vs without)' in table
    assert 'spectral filter time inside the forward of spanet:s 64x96' in table
    # The speed-up over the reference of the same arch, in the table.
    row = next(line for line in table.splitlines() if line.startswith('spanet:s '))
    assert row.split()[-1].endswith('x')


def test_benchmark_rejects_unknown_contenders():
    bench = load_tool('benchmark')
    with pytest.raises(ValueError, match='Unknown contender'):
        bench.build_backbone('resnet-50')
    with pytest.raises(ValueError, match='needs an arch'):
        bench.build_backbone('spanet')
