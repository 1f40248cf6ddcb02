"""Reading checkpoint files and fitting them to a backbone (spanet_mm/checkpoint.py), for both
generations: the authors' files, downstream files, URLs, what does not fit and what is not a
checkpoint; and the converter tool (tools/convert_release_checkpoint.py).
"""

import argparse
import functools
import gzip
import http.server
import logging
import re
import subprocess
import sys
import threading

import pytest
import torch

from spanet_mm import SPANet, SPANetV2
from spanet_mm.checkpoint import CheckpointError, load_pretrained
from spanet_tools.reference import ReferenceSPANet

from helpers.commands import REPO_ROOT

ROOT = REPO_ROOT
TINY = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 2, 1])
# A deeper variant of the tiny arch: what a checkpoint of "another depth" looks like.
TINY_DEEP = dict(embed_dims=[12, 18, 24, 30], depths=[2, 2, 3, 2])
V2_PURE = dict(embed_dims=[16, 32, 64, 64], depths=[1, 1, 2, 1])
V2_HYBRID = dict(V2_PURE, mixers=['spectral', 'spectral', 'mix_attention', 'attention'])


@pytest.fixture
def named_tiny_archs(monkeypatch):
    """Give the tiny archs names, so that messages can name the arch a file looks like."""
    monkeypatch.setitem(SPANet.arch_settings, 'tiny', TINY)
    monkeypatch.setitem(SPANet.arch_settings, 'tiny_deep', TINY_DEEP)


@pytest.fixture
def spanetv2(monkeypatch):
    monkeypatch.setitem(SPANetV2.arch_settings, 'tiny_pure', SPANetV2.resolve_arch(V2_PURE))
    monkeypatch.setitem(SPANetV2.arch_settings, 'tiny_hybrid', SPANetV2.resolve_arch(V2_HYBRID))
    return SPANetV2


def load(path, arch=TINY, **kwargs):
    model = SPANet(arch)
    load_pretrained(model, str(path), **kwargs)
    return model


def summary_lines(records):
    """The load summaries among log records (MMEngine's reader logs its own INFO line)."""
    return [
        r
        for r in records
        if r.levelno >= logging.INFO and r.getMessage().startswith(('SPANet:', 'SPANetV2:'))
    ]


def release_checkpoint(release_layout, source, num_classes=10):
    """A checkpoint in the release's classification layout made from ``source``'s weights."""
    state = release_layout(source.state_dict())
    last = source.num_stages - 1
    state['norm.weight'] = state.pop(f'norm{2 * last}.weight')
    state['norm.bias'] = state.pop(f'norm{2 * last}.bias')
    state['head.weight'] = torch.randn(num_classes, source.embed_dims[-1])
    state['head.bias'] = torch.randn(num_classes)
    return state


def build(arch, path, **kwargs):
    model = SPANet(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('wrap', [None, 'state_dict', 'model'])
def test_release_checkpoint_loads_to_identical_features(
    tiny_arch, tmp_path, wrap, release_layout, caplog
):
    source = SPANet(tiny_arch, out_indices=(3,)).eval()
    state = release_checkpoint(release_layout, source)
    path = tmp_path / 'spanet_release.pth'
    torch.save(state if wrap is None else {wrap: state, 'epoch': 300}, path)

    model = build(tiny_arch, path, out_indices=(0, 1, 2, 3))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[3], source(x)[0], rtol=0, atol=0)
    # Stages 1-3 have no norm in a classification checkpoint: they keep their init values.
    assert torch.equal(model.norm0.weight, torch.ones(12))


def test_release_checkpoint_matches_release_style_classifier(tiny_arch, tmp_path, release_layout):
    """The release's classifier (norm, pool, head) on our features gives its logits."""
    arch = SPANet.resolve_arch(tiny_arch)
    reference = ReferenceSPANet(**arch, num_classes=10).eval()
    torch.save({'model': reference.state_dict()}, tmp_path / 'ref.pth')
    model = build(tiny_arch, tmp_path / 'ref.pth', out_indices=(3,))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits = reference.head(model(x)[0].mean((-2, -1)))
        torch.testing.assert_close(logits, reference.classify(x), atol=1e-4, rtol=1e-4)


def test_backbone_prefixed_checkpoint(tiny_arch, tmp_path):
    source = SPANet(tiny_arch).eval()
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(4, 4, 1, 1)
    torch.save({'state_dict': state, 'meta': {}}, tmp_path / 'det.pth')
    model = build(tiny_arch, tmp_path / 'det.pth')
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def capture_log(level='DEBUG'):
    """An MMLogger whose records (all levels) land in the returned list."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_instance(f'spanet_ckpt_test_{len(_LOGGERS)}', log_level=level)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    _LOGGERS.append(logger)
    return logger, records


_LOGGERS = []


def test_load_reports_dropped_and_initial(tiny_arch, tmp_path, release_layout):
    from spanet_mm.checkpoint import load_pretrained

    source = SPANet(tiny_arch, out_indices=(3,))
    torch.save(release_checkpoint(release_layout, source), tmp_path / 'r.pth')
    logger, records = capture_log()
    model = SPANet(tiny_arch)
    load_pretrained(model, str(tmp_path / 'r.pth'), logger=logger)

    summary = summary_lines(records)
    assert len(summary) == 1 and summary[0].levelno == logging.INFO
    line = summary[0].getMessage()
    masks = 3 * sum(source.depths)
    loaded = len(model.state_dict()) - 6  # all but norm0-2 (weight and bias each)
    assert line.startswith(f'SPANet: loaded {loaded} tensors from ')
    assert (
        f'dropped {masks} fixed SPF masks (rebuilt here for each input size): network.0.* '
        '(3 tensors), network.2.* (3 tensors), network.4.* (6 tensors), network.6.* '
        '(3 tensors); ' in line
    )
    assert '2 tensors of the ImageNet classifier (not part of a backbone): head (2 tensors)' in line
    assert 'norm0-2 (6 tensors) kept their initial values (the file has no norm' in line
    # The summary names groups, not tensors; the full lists are at DEBUG.
    assert 'stages.0.0.norm1.weight' not in line
    debug = '\n'.join(r.getMessage() for r in records if r.levelno == logging.DEBUG)
    for key in (
        'norm0.weight',
        'norm2.bias',
        'head.weight',
        'stages.0.0.norm1.weight',
        'network.0.0.token_mixer.sps.2.filter',
    ):
        assert key in debug, key


def test_shape_mismatch_names_tensors(tiny_arch, tmp_path):
    other = SPANet(dict(tiny_arch, embed_dims=[12, 18, 24, 36]))
    torch.save(other.state_dict(), tmp_path / 'other.pth')
    own = SPANet(tiny_arch).state_dict()
    differ = [k for k, v in other.state_dict().items() if v.shape != own[k].shape]
    stage3 = sum(k.startswith('stages.3.') for k in differ)
    with pytest.raises(CheckpointError) as info:
        build(tiny_arch, tmp_path / 'other.pth')
    message = str(info.value)
    assert f'{len(differ)} tensors of another shape' in message
    assert f'stages.3.* ({stage3} tensors)' in message
    assert 'downsamples.2.weight: checkpoint (36, 24, 3, 3) vs model (30, 24, 3, 3)' in message
    assert 'allow_partial=True' in message


def timm_checkpoint(state, path):
    torch.save(
        {'state_dict': state, 'args': argparse.Namespace(model='spanet_small'), 'epoch': 299}, path
    )


def test_pickled_args_need_trust(tiny_arch, tmp_path, release_layout):
    source = SPANet(tiny_arch, out_indices=(3,)).eval()
    timm_checkpoint(release_checkpoint(release_layout, source), tmp_path / 'timm.pth.tar')
    with pytest.raises(CheckpointError, match='--trust'):
        build(tiny_arch, tmp_path / 'timm.pth.tar')

    convert = [
        sys.executable,
        str(ROOT / 'tools' / 'convert_release_checkpoint.py'),
        str(tmp_path / 'timm.pth.tar'),
        str(tmp_path / 'plain.pth'),
    ]
    refused = subprocess.run(convert, capture_output=True, text=True)
    assert refused.returncode != 0 and '--trust' in refused.stderr
    assert not (tmp_path / 'plain.pth').exists()

    done = subprocess.run(convert + ['--trust'], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plain = torch.load(tmp_path / 'plain.pth', weights_only=True)
    assert not any(k.endswith('.filter') for k in plain)
    assert 'backbone.norm3.weight' in plain and 'head.fc.weight' in plain
    model = build(tiny_arch, tmp_path / 'plain.pth', out_indices=(3,))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], source(x)[0], rtol=0, atol=0)


def test_convert_spanetv2_release_file(tmp_path):
    """The converter also takes SPANetV2 release files: classifier norm -> backbone.norm3
    (the pooled norm of gap_before_final_norm=True), head.* kept for SPANetV2ClsHead."""
    import inspect

    from spanet_mm.models.spanetv2 import SPANetV2
    from spanet_tools.reference.spanetv2 import ReferenceSPANetV2

    arch = SPANetV2.resolve_arch(dict(embed_dims=[16, 32, 64, 64], depths=[1, 1, 2, 1]))
    params = inspect.signature(ReferenceSPANetV2).parameters
    reference = ReferenceSPANetV2(**{k: v for k, v in arch.items() if k in params}, num_classes=10)
    release = {
        k: v for k, v in reference.state_dict().items() if not re.match(r'norm\d', k)
    }  # the ImageNet file has no dense norms
    torch.save(release, tmp_path / 'v2.pth')
    convert = [
        sys.executable,
        str(ROOT / 'tools' / 'convert_release_checkpoint.py'),
        str(tmp_path / 'v2.pth'),
        str(tmp_path / 'v2_plain.pth'),
    ]
    done = subprocess.run(convert, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plain = torch.load(tmp_path / 'v2_plain.pth', weights_only=True)
    assert torch.equal(plain['backbone.norm3.bias'], release['norm.bias'])
    assert torch.equal(plain['head.fc1.weight'], release['head.fc1.weight'])
    assert not any(k.startswith('norm.') for k in plain)
    assert (
        sum(k.startswith('backbone.') for k in plain) + sum(k.startswith('head.') for k in plain)
        == len(plain)
        == len(release)
    )

    classifier = SPANetV2(arch, out_indices=(3,), gap_before_final_norm=True)
    from spanet_mm.checkpoint import load_pretrained

    load_pretrained(classifier, str(tmp_path / 'v2_plain.pth'))
    assert torch.equal(classifier.norm3.weight, release['norm.weight'])

    torch.save({'conv1.weight': torch.zeros(2, 3, 1, 1)}, tmp_path / 'resnet.pth')
    refused = subprocess.run(
        convert[:2] + [str(tmp_path / 'resnet.pth'), str(tmp_path / 'x.pth')],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and 'not in a release layout' in refused.stderr


def test_opt_out_through_cfg_options():
    """The README's way to train without the authors' weights parses to init_cfg=None."""
    from mmengine.config import Config, DictAction

    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(['--cfg-options', 'model.backbone.init_cfg=None'])
    cfg = Config.fromfile(str(ROOT / 'configs' / 'mmdet' / 'retinanet_spanet_s_1x.py'))
    assert cfg.model.backbone.init_cfg['type'] == 'Pretrained'
    cfg.merge_from_dict(args.cfg_options)
    assert cfg.model.backbone.init_cfg is None
    backbone_cfg = dict(cfg.model.backbone)
    backbone_cfg.pop('type')
    backbone_cfg['arch'] = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 2, 1])
    SPANet(**backbone_cfg).init_weights()  # no file needed, no error


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
    assert (
        f'stages.0.1 ({per_block} tensors), stages.1.1 ({per_block} tensors), '
        f'stages.2.2 ({per_block_rs} tensors), stages.3.1 ({per_block_rs} tensors)' in message
    )
    assert "looks like SPANet arch 'tiny_deep'" in message
    assert "arch 'tiny'" in message  # the backbone's own arch
    assert "build the backbone with arch='tiny_deep'" in message
    assert (
        f"init_cfg=dict(type='Pretrained', checkpoint='{tmp_path / 'deep.pth'}', "
        'allow_partial=True)' in message
    )


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
    model = SPANet(
        TINY,
        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'deep.pth'), allow_partial=True),
    )
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
    model = SPANet(
        TINY_DEEP,
        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'tiny.pth'), allow_partial=True),
    )
    before = model.stages[0][1].norm1.weight.detach().clone()
    model.init_weights()
    assert torch.equal(model.stem.weight, small.stem.weight)
    assert torch.equal(model.stages[0][1].norm1.weight, before)  # not in the file


def test_file_without_some_backbone_tensors(tmp_path):
    state = SPANet(TINY).state_dict()
    del state['stem.weight'], state['stem.bias']
    torch.save(state, tmp_path / 'no_stem.pth')
    with pytest.raises(
        CheckpointError,
        match=r'2 tensors of this backbone not in the file: '
        r'stem \(2 tensors\)',
    ):
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
    torch.save(
        {'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 64)},
        tmp_path / 'resnet.pth',
    )
    with pytest.raises(
        CheckpointError, match='has no tensor this backbone can use; it holds no SPANet stages'
    ):
        load(tmp_path / 'resnet.pth', allow_partial=True)


def test_custom_arch_file_matches_no_named_arch(tmp_path):
    other = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 3, 1])
    torch.save(SPANet(other).state_dict(), tmp_path / 'custom.pth')
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            'matches no named arch (its stages have depths [1, 1, 3, 1], embed_dims '
            '[12, 18, 24, 30])'
        ),
    ):
        load(tmp_path / 'custom.pth')


def test_mismatched_shapes_with_and_without_allow_partial(tmp_path):
    torch.save(SPANet(TINY).state_dict(), tmp_path / 'rgb.pth')
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            '1 tensor of another shape (stem (1 tensor)): stem.weight: checkpoint '
            '(12, 3, 7, 7) vs model (12, 4, 7, 7)'
        ),
    ):
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


def test_missing_relative_path_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    looked = re.escape(str(tmp_path))
    with pytest.raises(CheckpointError, match=f'not found \\(looked in {looked}\\)'):
        load('checkpoints/spanet-small.pth')


def test_directory(tmp_path):
    (tmp_path / 'weights').mkdir()
    with pytest.raises(
        CheckpointError, match='is a directory, not a checkpoint file; .*it holds no .pth'
    ):
        load(tmp_path / 'weights')
    torch.save(SPANet(TINY).state_dict(), tmp_path / 'weights' / 'spanet-small.pth')
    with pytest.raises(CheckpointError, match='checkpoint files in it: spanet-small.pth'):
        load(tmp_path / 'weights')


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
        with pytest.raises(
            CheckpointError,
            match=re.escape(
                f"is a {kind} checkpoint (arch '{names[kind]}'), not a {type(target).__name__} one"
            ),
        ):
            load_pretrained(target, str(tmp_path / 'other.pth'), allow_partial=allow_partial)


@pytest.mark.parametrize('direction', ['v1_into_v2', 'v2_into_v1'])
def test_no_loading_across_generations_with_custom_archs(tmp_path, direction):
    """The other generation's files are recognised by their layout, named arch or not."""
    v1 = SPANet(dict(embed_dims=[16, 32, 64, 64], depths=[1, 1, 1, 1]))
    v2 = SPANetV2(dict(V2_PURE, depths=[1, 1, 1, 1]))
    source, target = (v1, v2) if direction == 'v1_into_v2' else (v2, v1)
    torch.save(source.state_dict(), tmp_path / 'custom.pth')
    expected = (
        f'is a {type(source).__name__} checkpoint (a custom arch), not a '
        f"{type(target).__name__} one: build the backbone with type='{type(source).__name__}'"
    )
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        load_pretrained(target, str(tmp_path / 'custom.pth'), allow_partial=True)


def test_v2_release_classifier_file_into_dense_backbone(tmp_path, spanetv2):
    """The release's V2 ImageNet file: blocks + classifier norm + head, no dense norms."""
    source = spanetv2(V2_PURE)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith('norm')}
    state.update(
        {
            'norm.weight': torch.randn(64),
            'norm.bias': torch.randn(64),
            'head.fc1.weight': torch.randn(256, 64),
        }
    )
    torch.save(state, tmp_path / 'release.pth')
    logger, records = capture_log()
    model = spanetv2(V2_PURE)
    load_pretrained(model, str(tmp_path / 'release.pth'), logger=logger)
    (line,) = [r.getMessage() for r in summary_lines(records)]
    assert 'loaded' in line and "(it looks like SPANetV2 arch 'tiny_pure')" in line
    assert 'norm0-3 (4 tensors) kept their initial values' in line
    assert torch.equal(model.stages[2][1].mlp.fc1.weight, source.stages[2][1].mlp.fc1.weight)
    # The classifier backbone (pooled norm) takes the classifier's norm.
    classifier = spanetv2(V2_PURE, out_indices=(3,), gap_before_final_norm=True)
    load_pretrained(classifier, str(tmp_path / 'release.pth'))
    assert torch.equal(classifier.norm3.bias, state['norm.bias'])


def test_missing_file_is_an_error_with_an_opt_out(tmp_path):
    absent = str(tmp_path / 'absent.pth')
    model = SPANet(TINY, init_cfg=dict(type='Pretrained', checkpoint=absent))
    with pytest.raises(CheckpointError) as info:
        model.init_weights()
    message = str(info.value)
    assert f"pretrained checkpoint '{absent}' not found" in message
    assert 'docs/model_zoo.md, "Pretrained weights"' in message
    assert 'SPANet-official/releases' in message
    assert '--cfg-options model.backbone.init_cfg=None' in message
    v2 = SPANetV2(V2_PURE, init_cfg=dict(type='Pretrained', checkpoint=absent))
    with pytest.raises(CheckpointError, match='SPANetV2-official/releases'):
        v2.init_weights()
    # The documented opt-out: no init_cfg, the default initialisation, no error.
    SPANet(TINY, init_cfg=None).init_weights()


def _truncated(path):
    torch.save(SPANet(TINY).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    'make',
    [
        lambda p: p.write_bytes(b''),
        _truncated,
        lambda p: p.write_text('<!DOCTYPE html>\n<html><body>Not Found</body></html>'),
        lambda p: p.write_bytes(bytes(range(7, 256)) * 8),
        lambda p: p.write_bytes(gzip.compress(b'x' * 100)),
    ],
    ids=['empty', 'truncated', 'html', 'random', 'gzip'],
)
def test_file_that_is_not_a_checkpoint(tmp_path, make):
    path = tmp_path / 'weights.pth'
    make(path)
    with pytest.raises(
        CheckpointError, match=re.escape(f'{path} could not be read as a PyTorch checkpoint (')
    ) as info:
        load(path)
    assert 'an interrupted download or copy, or another kind of file?' in str(info.value)
    assert '--trust' not in str(info.value)


@pytest.mark.parametrize(
    'obj, message',
    [
        ([1, 2, 3], 'holds a list of 3 items, expected a dict'),
        (torch.zeros(2, 3), r'holds a Tensor of shape \(2, 3\), expected a dict'),
        ({'epoch': 3, 'lr': 0.1}, 'holds no tensors'),
    ],
)
def test_pickles_of_something_else(tmp_path, obj, message):
    torch.save(obj, tmp_path / 'thing.pth')
    with pytest.raises(CheckpointError, match=message) as info:
        load(tmp_path / 'thing.pth')
    assert '--trust' not in str(info.value)


def test_checkpoint_with_pickled_args_asks_for_trust(tmp_path):
    state = SPANet(TINY).state_dict()
    torch.save(
        {'state_dict': state, 'args': argparse.Namespace(model='spanet_small')},
        tmp_path / 'timm.pth.tar',
    )
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / 'timm.pth.tar')
    message = str(info.value)
    assert 'pickles objects other than tensors (argparse.Namespace;' in message
    assert 'tools/convert_release_checkpoint.py IN OUT --trust' in message


@pytest.mark.parametrize('checkpoint', ['', None, 3])
def test_not_a_path(checkpoint):
    with pytest.raises(CheckpointError, match='checkpoint must be a file path or a URL'):
        load_pretrained(SPANet(TINY), checkpoint)


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A file server on 127.0.0.1 for ``tmp_path/served``; downloads land in a temporary
    torch hub directory."""
    folder = tmp_path / 'served'
    folder.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_pretrained_from_a_url(http_server, tmp_path):
    """``init_cfg=dict(type='Pretrained', checkpoint=URL)`` goes through MMEngine's loader,
    which downloads into the torch hub directory; a wrong address is a clear error."""
    folder, address = http_server
    source = SPANet(TINY).eval()
    torch.save(
        {'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
        folder / 'spanet_tiny.pth',
    )
    model = SPANet(TINY, init_cfg=dict(type='Pretrained', checkpoint=f'{address}/spanet_tiny.pth'))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert (tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'spanet_tiny.pth').is_file()

    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f'{address}/absent.pth could not be read as a PyTorch checkpoint (HTTPError'
        ),
    ):
        load(f'{address}/absent.pth')
