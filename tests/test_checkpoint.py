"""Loading the authors' checkpoints and the converter tool."""
import argparse
import logging
import subprocess
import sys

import pytest
import torch

from spanet_mm import SPANet
from spanet_mm.checkpoint import CheckpointError
from spanet_mm.reference import ReferenceSPANet

ROOT = __import__('pathlib').Path(__file__).resolve().parents[1]


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
def test_release_checkpoint_loads_to_identical_features(tiny_arch, tmp_path, wrap,
                                                        release_layout, caplog):
    source = SPANet(tiny_arch, out_indices=(3, )).eval()
    state = release_checkpoint(release_layout, source)
    path = tmp_path / 'spanet_release.pth'
    torch.save(state if wrap is None else {wrap: state, 'epoch': 300}, path)

    model = build(tiny_arch, path, out_indices=(0, 1, 2, 3))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[3], source(x)[0], rtol=0, atol=0)
    # Stages 1-3 have no norm in a classification checkpoint: they keep their init values.
    assert torch.equal(model.norm0.weight, torch.ones(12))


def test_release_checkpoint_matches_release_style_classifier(tiny_arch, tmp_path,
                                                             release_layout):
    """The release's classifier (norm, pool, head) on our features gives its logits."""
    arch = SPANet.resolve_arch(tiny_arch)
    reference = ReferenceSPANet(**arch, num_classes=10).eval()
    torch.save({'model': reference.state_dict()}, tmp_path / 'ref.pth')
    model = build(tiny_arch, tmp_path / 'ref.pth', out_indices=(3, ))
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


def test_load_reports_dropped_and_initial(tiny_arch, tmp_path, release_layout):
    from mmengine.logging import MMLogger
    source = SPANet(tiny_arch, out_indices=(3, ))
    torch.save(release_checkpoint(release_layout, source), tmp_path / 'r.pth')
    logger = MMLogger.get_instance('spanet_ckpt_test', log_level='INFO')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        model = SPANet(tiny_arch, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'r.pth')))
        from spanet_mm.checkpoint import load_pretrained
        load_pretrained(model, str(tmp_path / 'r.pth'), logger=logger)
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records if 'SPANet: loaded' in r.getMessage()]
    assert len(lines) == 1
    masks = 3 * sum(source.depths)
    assert f'{masks} fixed SPF masks' in lines[0]
    assert '2 not in this backbone: head.weight, head.bias' in lines[0]
    assert lines[0].endswith('kept their initial values: norm0.weight, norm0.bias, '
                             'norm1.weight, norm1.bias, norm2.weight, norm2.bias')


def test_shape_mismatch_names_tensors(tiny_arch, tmp_path):
    other = SPANet(dict(tiny_arch, embed_dims=[12, 18, 24, 36]))
    torch.save(other.state_dict(), tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match=r'stages\.3\.0\.norm1\.weight: checkpoint '
                       r'\(36,\) vs model \(30,\)'):
        build(tiny_arch, tmp_path / 'other.pth')


def test_not_a_checkpoint(tiny_arch, tmp_path):
    bad = tmp_path / 'notes.pth'
    bad.write_text('these are not weights')
    with pytest.raises(CheckpointError, match='is not a PyTorch checkpoint'):
        build(tiny_arch, bad)
    torch.save({'epoch': 3}, tmp_path / 'empty.pth')
    with pytest.raises(CheckpointError, match='holds no tensors'):
        build(tiny_arch, tmp_path / 'empty.pth')
    torch.save(torch.zeros(3), tmp_path / 'tensor.pth')
    with pytest.raises(CheckpointError, match='holds a Tensor, expected a dict'):
        build(tiny_arch, tmp_path / 'tensor.pth')


def test_missing_file_warns_and_keeps_init(tiny_arch, tmp_path):
    model = SPANet(tiny_arch, init_cfg=dict(type='Pretrained',
                                            checkpoint=str(tmp_path / 'absent.pth')))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def timm_checkpoint(state, path):
    torch.save({'state_dict': state, 'args': argparse.Namespace(model='spanet_small'),
                'epoch': 299}, path)


def test_pickled_args_need_trust(tiny_arch, tmp_path, release_layout):
    source = SPANet(tiny_arch, out_indices=(3, )).eval()
    timm_checkpoint(release_checkpoint(release_layout, source), tmp_path / 'timm.pth.tar')
    with pytest.raises(CheckpointError, match='--trust'):
        build(tiny_arch, tmp_path / 'timm.pth.tar')

    convert = [sys.executable, str(ROOT / 'tools' / 'convert_release_checkpoint.py'),
               str(tmp_path / 'timm.pth.tar'), str(tmp_path / 'plain.pth')]
    refused = subprocess.run(convert, capture_output=True, text=True)
    assert refused.returncode != 0 and '--trust' in refused.stderr
    assert not (tmp_path / 'plain.pth').exists()

    done = subprocess.run(convert + ['--trust'], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plain = torch.load(tmp_path / 'plain.pth', weights_only=True)
    assert not any(k.endswith('.filter') for k in plain)
    assert 'backbone.norm3.weight' in plain and 'head.fc.weight' in plain
    model = build(tiny_arch, tmp_path / 'plain.pth', out_indices=(3, ))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], source(x)[0], rtol=0, atol=0)
