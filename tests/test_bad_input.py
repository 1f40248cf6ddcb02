"""A battery of bad inputs: constructor arguments, forward inputs and checkpoints.

Every case must end in an error that says what is wrong (or, for the explicit
``allow_partial=True``, in a load that says what it left out); nothing may load or build
silently wrong.
"""
import argparse
import json
import logging
import pickle
import re

import pytest
import torch

from spanet_mm import SPANet
from spanet_mm.checkpoint import CheckpointError, load_pretrained

TINY = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 2, 1])
# A deeper variant of the tiny arch: what a checkpoint of "another depth" looks like.
TINY_DEEP = dict(embed_dims=[12, 18, 24, 30], depths=[2, 2, 3, 2])


@pytest.fixture
def named_tiny_archs(monkeypatch):
    """Give the tiny archs names, so that messages can name the arch a file looks like."""
    monkeypatch.setitem(SPANet.arch_settings, 'tiny', TINY)
    monkeypatch.setitem(SPANet.arch_settings, 'tiny_deep', TINY_DEEP)


def capture_log():
    from mmengine.logging import MMLogger
    capture_log.count = getattr(capture_log, 'count', 0) + 1
    logger = MMLogger.get_instance(f'bad_input_{capture_log.count}', log_level='DEBUG')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    return logger, records


def load(path, arch=TINY, **kwargs):
    model = SPANet(arch)
    load_pretrained(model, str(path), **kwargs)
    return model


# ---------------------------------------------------------------------------------------------
# Constructor
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('kwargs, message', [
    (dict(drop_path_rate=1.5), r'drop_path_rate must be in \[0, 1\), got 1\.5'),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\), got 1\.0'),
    (dict(drop_path_rate=-0.1), r'drop_path_rate must be in \[0, 1\)'),
    (dict(drop_path_rate='0.1'), r'drop_path_rate must be in \[0, 1\)'),
    (dict(in_channels=0), 'in_channels must be a positive int, got 0'),
    (dict(in_channels=-3), 'in_channels must be a positive int, got -3'),
    (dict(in_channels=2.5), 'in_channels must be a positive int, got 2.5'),
    (dict(in_channels=True), 'in_channels must be a positive int, got True'),
    (dict(out_indices=(4, )), r'out_indices must be in \[-4, 3\]'),
    (dict(out_indices=()), 'out_indices must be an int or a non-empty sequence'),
    (dict(out_indices=(0.5, )), 'out_indices must be an int or a non-empty sequence'),
    (dict(frozen_stages=5), r'frozen_stages must be in \[-1, 4\], got 5'),
    (dict(frozen_stages=-2), r'frozen_stages must be in \[-1, 4\], got -2'),
])
def test_constructor_range_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SPANet(TINY, **kwargs)


@pytest.mark.parametrize('arch, message', [
    ('huge', "Unknown SPANet arch 'huge'; valid names are"),
    (dict(embed_dims=[12, 18, 24, 30]), r"needs the keys embed_dims and depths; \['depths'\]"),
    (dict(TINY, depths=[1, 0, 2, 1]), 'depths must be a non-empty list of positive ints'),
    (dict(TINY, depths=[]), 'depths must be a non-empty list of positive ints'),
    (dict(TINY, depths=[1, 1, 2.0, 1]), 'depths must be a non-empty list of positive ints'),
    (dict(TINY, embed_dims=[12, -18, 24, 30]), 'embed_dims must be positive ints'),
    (dict(TINY, embed_dims=[12, 18, 24]), 'one entry per stage: depths has 4'),
    (dict(TINY, radii=[2, 2, 1]), 'one entry per stage: depths has 4'),
    (dict(TINY, res_scale=[True]), 'one entry per stage: depths has 4'),
    (dict(TINY, balances=[0.7, 1.0, 0.9]), r'balances must be a non-empty list of numbers '
     r'in \(0, 1\)'),
    (dict(TINY, balances=[0.0]), r'balances must be .* in \(0, 1\)'),
    (dict(TINY, balances=[1.5]), r'balances must be .* in \(0, 1\)'),
    (dict(TINY, balances=[]), r'balances must be a non-empty list'),
    (dict(TINY, radii=[2, -1, 1, 1]), 'radii must be >= 0'),
    (dict(TINY, kernel_size=6), 'kernel_size must be a positive odd int, got 6'),
    (dict(TINY, mlp_ratio=0), 'mlp_ratio must be positive, got 0'),
    (dict(TINY, heads=4), r"Unknown SPANet arch keys \['heads'\]"),
])
def test_arch_checks(arch, message):
    with pytest.raises(ValueError, match=message):
        SPANet(arch)


def test_arch_of_another_type():
    with pytest.raises(TypeError, match='arch must be a str or a dict, got int'):
        SPANet(3)


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('shape', [(3, 64, 64), (1, 4, 64, 64), (1, 1, 64, 64),
                                   (1, 3, 1, 64, 64)])
def test_forward_rejects_wrong_shapes(shape):
    model = SPANet(TINY).eval()
    with pytest.raises(ValueError, match=re.escape(
            f'expects input of shape (N, 3, H, W), got {shape}')):
        model(torch.zeros(shape))


def test_forward_with_other_in_channels():
    model = SPANet(TINY, in_channels=1).eval()
    with torch.no_grad():
        assert [o.shape[1] for o in model(torch.randn(1, 1, 64, 64))] == TINY['embed_dims']
    with pytest.raises(ValueError, match=re.escape('(N, 1, H, W), got (1, 3, 64, 64)')):
        model(torch.zeros(1, 3, 64, 64))


# ---------------------------------------------------------------------------------------------
# Checkpoints of another arch, or covering part of the backbone
# ---------------------------------------------------------------------------------------------


def test_deeper_checkpoint_names_blocks_arch_and_option(tmp_path, named_tiny_archs):
    torch.save(SPANet(TINY_DEEP).state_dict(), tmp_path / 'deep.pth')
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / 'deep.pth')
    message = str(info.value)
    deep = SPANet(TINY_DEEP).state_dict()
    own = SPANet(TINY).state_dict()
    extra = [k for k in deep if k not in own]
    assert f'{len(extra)} tensors of the file not in this backbone' in message
    per_block = sum(k.startswith('stages.0.1.') for k in deep)
    per_block_rs = sum(k.startswith('stages.2.2.') for k in deep)  # with ResScale
    assert (f'stages.0.1 ({per_block} tensors), stages.1.1 ({per_block} tensors), '
            f'stages.2.2 ({per_block_rs} tensors), stages.3.1 ({per_block_rs} tensors)'
            in message)
    assert "looks like SPANet arch 'tiny_deep'" in message
    assert "arch 'tiny'" in message  # the backbone's own arch
    assert "build the backbone with arch='tiny_deep'" in message
    assert (f"init_cfg=dict(type='Pretrained', checkpoint='{tmp_path / 'deep.pth'}', "
            'allow_partial=True)' in message)


def test_shallower_checkpoint_is_missing_blocks(tmp_path, named_tiny_archs):
    torch.save(SPANet(TINY).state_dict(), tmp_path / 'tiny.pth')
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / 'tiny.pth', arch=TINY_DEEP)
    message = str(info.value)
    assert 'tensors of this backbone not in the file: stages.0.1 (' in message
    assert "looks like SPANet arch 'tiny'" in message
    assert 'allow_partial=True' in message


def test_allow_partial_loads_what_fits_and_says_so(tmp_path, named_tiny_archs):
    deep = SPANet(TINY_DEEP)
    torch.save(deep.state_dict(), tmp_path / 'deep.pth')
    logger, records = capture_log()
    model = SPANet(TINY, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'deep.pth'),
                                       allow_partial=True))
    load_pretrained(model, str(tmp_path / 'deep.pth'), allow_partial=True, logger=logger)
    for key, value in model.state_dict().items():
        assert torch.equal(value, deep.state_dict()[key]), key
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert 'tensors this backbone lacks (allow_partial): stages.0.1 (' in warnings[0]
    assert "looks like SPANet arch 'tiny_deep'" in warnings[0]


def test_allow_partial_through_init_cfg(tmp_path):
    small = SPANet(TINY)
    torch.save(small.state_dict(), tmp_path / 'tiny.pth')
    model = SPANet(TINY_DEEP, init_cfg=dict(type='Pretrained', checkpoint=str(
        tmp_path / 'tiny.pth'), allow_partial=True))
    before = model.stages[0][1].norm1.weight.detach().clone()
    model.init_weights()
    assert torch.equal(model.stem.weight, small.stem.weight)
    assert torch.equal(model.stages[0][1].norm1.weight, before)  # not in the file


def test_file_without_some_backbone_tensors(tmp_path):
    state = SPANet(TINY).state_dict()
    del state['stem.weight'], state['stem.bias']
    torch.save(state, tmp_path / 'no_stem.pth')
    with pytest.raises(CheckpointError, match=r'2 tensors of this backbone not in the file: '
                       r'stem \(2 tensors\)'):
        load(tmp_path / 'no_stem.pth')
    model = load(tmp_path / 'no_stem.pth', allow_partial=True)
    assert torch.equal(model.stages[0][0].norm1.weight, state['stages.0.0.norm1.weight'])


def test_real_archs_m_into_s(tmp_path):
    """The case of the issue: SPANet-M weights in an arch='s' backbone."""
    torch.save(SPANet('m').state_dict(), tmp_path / 'spanet-medium.pth')
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / 'spanet-medium.pth', arch='s')
    message = str(info.value)
    assert '280 tensors of the file not in this backbone' in message
    assert 'stages.0.4-5 (44 tensors), stages.1.4-5 (44 tensors), stages.2.12-17' in message
    assert "looks like SPANet arch 'm'" in message and 'allow_partial=True' in message


def test_unrelated_checkpoint(tmp_path):
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 64)},
               tmp_path / 'resnet.pth')
    with pytest.raises(CheckpointError, match='has no tensor this backbone can use; it holds '
                       'no SPANet stages'):
        load(tmp_path / 'resnet.pth', allow_partial=True)


def test_custom_arch_file_matches_no_named_arch(tmp_path):
    other = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 3, 1])
    torch.save(SPANet(other).state_dict(), tmp_path / 'custom.pth')
    with pytest.raises(CheckpointError, match=re.escape(
            'matches no named arch (its stages have depths [1, 1, 3, 1], embed_dims '
            '[12, 18, 24, 30])')):
        load(tmp_path / 'custom.pth')


def test_mismatched_shapes_with_and_without_allow_partial(tmp_path):
    torch.save(SPANet(TINY).state_dict(), tmp_path / 'rgb.pth')
    with pytest.raises(CheckpointError, match=re.escape(
            '1 tensor of another shape (stem (1 tensor)): stem.weight: checkpoint '
            '(12, 3, 7, 7) vs model (12, 4, 7, 7)')):
        model = SPANet(TINY, in_channels=4)
        load_pretrained(model, str(tmp_path / 'rgb.pth'))
    model = SPANet(TINY, in_channels=4)
    stem = model.stem.weight.detach().clone()
    load_pretrained(model, str(tmp_path / 'rgb.pth'), allow_partial=True)
    assert torch.equal(model.stem.weight, stem)


def test_prefix_with_no_keys(tmp_path):
    torch.save(SPANet(TINY).state_dict(), tmp_path / 'plain.pth')
    with pytest.raises(CheckpointError, match="No key of the checkpoint starts with 'student.'"):
        load(tmp_path / 'plain.pth', prefix='student.')


# ---------------------------------------------------------------------------------------------
# Files that are not checkpoints
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / 'spanet-small.pth')
    message = str(info.value)
    assert f"'{tmp_path / 'spanet-small.pth'}' not found" in message
    assert 'README.md, section "Pretrained weights"' in message
    assert 'init_cfg=None' in message


def test_missing_relative_path_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=f'not found \\(looked in {re.escape(str(tmp_path))}\\)'):
        load('checkpoints/spanet-small.pth')


def test_directory(tmp_path):
    (tmp_path / 'weights').mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file; .*it "
                       'holds no .pth'):
        load(tmp_path / 'weights')
    torch.save(SPANet(TINY).state_dict(), tmp_path / 'weights' / 'spanet-small.pth')
    with pytest.raises(CheckpointError, match='checkpoint files in it: spanet-small.pth'):
        load(tmp_path / 'weights')


def test_empty_file(tmp_path):
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'is empty \(0 bytes\)'):
        load(tmp_path / 'empty.pth')


@pytest.mark.parametrize('zip_format', [True, False])
def test_truncated_file(tmp_path, zip_format):
    torch.save(SPANet(TINY).state_dict(), tmp_path / 'full.pth',
               _use_new_zipfile_serialization=zip_format)
    data = (tmp_path / 'full.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match='is truncated'):
        load(tmp_path / 'cut.pth')


@pytest.mark.parametrize('content, message', [
    ('backbone weights: see README\n', 'is a text file, not a PyTorch checkpoint'),
    (json.dumps({'stem.weight': [[1.0]]}), 'is a JSON file, not a PyTorch checkpoint'),
    (json.dumps([1, 2, 3]), 'is a JSON file, not a PyTorch checkpoint'),
    ('<!DOCTYPE html>\n<html><body>Not Found</body></html>', 'is an HTML page'),
    ('version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n', 'Git LFS pointer'),
])
def test_text_files(tmp_path, content, message):
    (tmp_path / 'weights.pth').write_text(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load(tmp_path / 'weights.pth')
    assert 'pickles objects' not in str(info.value)


@pytest.mark.parametrize('obj, message', [
    ([1, 2, 3], 'holds a list of 3 items, expected a dict'),
    ((torch.zeros(2), ), 'holds a tuple of 1 items, expected a dict'),
    (torch.zeros(2, 3), r'holds a Tensor of shape \(2, 3\), expected a dict'),
    ({'epoch': 3, 'lr': 0.1}, 'holds no tensors'),
    (argparse.Namespace(model='spanet_small'), 'holds a pickled argparse.Namespace and no '
     'tensors: it is not a checkpoint'),
])
def test_pickles_of_something_else(tmp_path, obj, message):
    torch.save(obj, tmp_path / 'thing.pth')
    with pytest.raises(CheckpointError, match=message) as info:
        load(tmp_path / 'thing.pth')
    assert '--trust' not in str(info.value)


def test_plain_pickle_of_a_dict(tmp_path):
    with open(tmp_path / 'thing.pkl', 'wb') as f:
        pickle.dump({'weights': [1.0, 2.0]}, f, protocol=4)
    with pytest.raises(CheckpointError, match='holds a pickled dict and no tensors'):
        load(tmp_path / 'thing.pkl')


@pytest.mark.parametrize('zip_format', [True, False])
def test_checkpoint_with_pickled_args_asks_for_trust(tmp_path, zip_format):
    state = SPANet(TINY).state_dict()
    torch.save({'state_dict': state, 'args': argparse.Namespace(model='spanet_small')},
               tmp_path / 'timm.pth.tar', _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / 'timm.pth.tar')
    message = str(info.value)
    assert f'is a checkpoint ({len(state)} tensors) that also pickles objects' in message
    assert 'args: argparse.Namespace' in message and '--trust' in message


def test_random_bytes(tmp_path):
    (tmp_path / 'noise.pth').write_bytes(bytes(range(7, 256)) * 8)
    with pytest.raises(CheckpointError, match='is not a PyTorch checkpoint'):
        load(tmp_path / 'noise.pth')


def test_other_containers(tmp_path):
    import gzip
    import zipfile
    with gzip.open(tmp_path / 'w.pth.gz', 'wb') as f:
        f.write(b'x' * 100)
    with pytest.raises(CheckpointError, match='is gzip-compressed'):
        load(tmp_path / 'w.pth.gz')
    with zipfile.ZipFile(tmp_path / 'images.zip', 'w') as archive:
        archive.writestr('a.txt', 'hello')
    with pytest.raises(CheckpointError, match='is a zip archive but not a PyTorch checkpoint'):
        load(tmp_path / 'images.zip')


@pytest.mark.parametrize('checkpoint, message', [
    ('https://example.com/spanet-small.pth', 'is a URL; this package does not download'),
    ('', 'checkpoint must be a file path'),
    (None, 'checkpoint must be a file path'),
])
def test_not_a_path(checkpoint, message):
    model = SPANet(TINY)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(model, checkpoint)


# ---------------------------------------------------------------------------------------------
# SPANetV2: the same rules, and no loading across generations
# ---------------------------------------------------------------------------------------------

V2_PURE = dict(embed_dims=[16, 32, 64, 64], depths=[1, 1, 2, 1])
V2_HYBRID = dict(V2_PURE, mixers=['spectral', 'spectral', 'mix_attention', 'attention'])


@pytest.fixture
def spanetv2(monkeypatch):
    from spanet_mm.models.spanetv2 import SPANetV2
    monkeypatch.setitem(SPANetV2.arch_settings, 'tiny_pure',
                        SPANetV2.resolve_arch(V2_PURE))
    monkeypatch.setitem(SPANetV2.arch_settings, 'tiny_hybrid',
                        SPANetV2.resolve_arch(V2_HYBRID))
    return SPANetV2


@pytest.mark.parametrize('kwargs, message', [
    (dict(drop_path_rate=1.5), r'drop_path_rate must be in \[0, 1\)'),
    (dict(in_channels=0), 'in_channels must be a positive int'),
    (dict(out_indices=(7, )), 'out_indices must be in'),
])
def test_v2_constructor_range_checks(spanetv2, kwargs, message):
    with pytest.raises(ValueError, match=message):
        spanetv2(V2_PURE, **kwargs)


def test_v2_other_arch_names_arch_and_option(tmp_path, spanetv2):
    torch.save(spanetv2(V2_HYBRID).state_dict(), tmp_path / 'hybrid.pth')
    with pytest.raises(CheckpointError) as info:
        load_pretrained(spanetv2(V2_PURE), str(tmp_path / 'hybrid.pth'))
    message = str(info.value)
    assert "looks like SPANetV2 arch 'tiny_hybrid'" in message
    assert 'tensors of the file not in this backbone: stages.2.* (' in message
    assert 'allow_partial=True' in message


@pytest.mark.parametrize('direction', ['v1_into_v2', 'v2_into_v1'])
def test_no_loading_across_generations(tmp_path, spanetv2, named_tiny_archs, direction):
    v1, v2 = SPANet(TINY), spanetv2(V2_PURE)
    source, target = (v1, v2) if direction == 'v1_into_v2' else (v2, v1)
    torch.save(source.state_dict(), tmp_path / 'other.pth')
    names = {'SPANet': 'tiny', 'SPANetV2': 'tiny_pure'}
    kind = type(source).__name__
    for allow_partial in (False, True):
        with pytest.raises(CheckpointError, match=re.escape(
                f"is a {kind} checkpoint (arch '{names[kind]}'), not a "
                f'{type(target).__name__} one')):
            load_pretrained(target, str(tmp_path / 'other.pth'), allow_partial=allow_partial)


def test_v2_release_classifier_file_into_dense_backbone(tmp_path, spanetv2):
    """The release's V2 ImageNet file: blocks + classifier norm + head, no dense norms."""
    source = spanetv2(V2_PURE)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith('norm')}
    state.update({'norm.weight': torch.randn(64), 'norm.bias': torch.randn(64),
                  'head.fc1.weight': torch.randn(256, 64)})
    torch.save(state, tmp_path / 'release.pth')
    logger, records = capture_log()
    model = spanetv2(V2_PURE)
    load_pretrained(model, str(tmp_path / 'release.pth'), logger=logger)
    line, = [r.getMessage() for r in records if r.levelno >= logging.INFO]
    assert "loaded" in line and "(it looks like SPANetV2 arch 'tiny_pure')" in line
    assert 'norm0-3 (4 tensors) kept their initial values' in line
    assert torch.equal(model.stages[2][1].mlp.fc1.weight, source.stages[2][1].mlp.fc1.weight)
    # The classifier backbone (pooled norm) takes the classifier's norm.
    classifier = spanetv2(V2_PURE, out_indices=(3, ), gap_before_final_norm=True)
    load_pretrained(classifier, str(tmp_path / 'release.pth'))
    assert torch.equal(classifier.norm3.bias, state['norm.bias'])
