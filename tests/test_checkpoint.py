"""Loading the authors' checkpoints and the converter tool."""
import argparse
import logging
import re
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
    source = SPANet(tiny_arch, out_indices=(3, ))
    torch.save(release_checkpoint(release_layout, source), tmp_path / 'r.pth')
    logger, records = capture_log()
    model = SPANet(tiny_arch)
    load_pretrained(model, str(tmp_path / 'r.pth'), logger=logger)

    summary = [r for r in records if r.levelno >= logging.INFO]
    assert len(summary) == 1 and summary[0].levelno == logging.INFO
    line = summary[0].getMessage()
    masks = 3 * sum(source.depths)
    loaded = len(model.state_dict()) - 6  # all but norm0-2 (weight and bias each)
    assert line.startswith(f'SPANet: loaded {loaded} tensors from ')
    assert f'dropped {masks} fixed SPF masks (rebuilt here for each input size)' in line
    assert ('2 tensors of the ImageNet classifier (not part of a backbone): head (2 tensors)'
            in line)
    assert 'norm0-2 (6 tensors) kept their initial values (the file has no norm' in line
    # The summary names groups, not tensors; the full lists are at DEBUG.
    assert 'stages.0.0.norm1.weight' not in line
    debug = '\n'.join(r.getMessage() for r in records if r.levelno == logging.DEBUG)
    for key in ('norm0.weight', 'norm2.bias', 'head.weight', 'stages.0.0.norm1.weight',
                'network.0.0.token_mixer.sps.2.filter'):
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
    assert ('downsamples.2.weight: checkpoint (36, 24, 3, 3) vs model (30, 24, 3, 3)'
            in message)
    assert 'allow_partial=True' in message


def test_not_a_checkpoint(tiny_arch, tmp_path):
    bad = tmp_path / 'notes.pth'
    bad.write_text('these are not weights')
    with pytest.raises(CheckpointError, match='is a text file, not a PyTorch checkpoint'):
        build(tiny_arch, bad)
    torch.save({'epoch': 3}, tmp_path / 'empty.pth')
    with pytest.raises(CheckpointError, match='holds no tensors'):
        build(tiny_arch, tmp_path / 'empty.pth')
    torch.save(torch.zeros(3), tmp_path / 'tensor.pth')
    with pytest.raises(CheckpointError, match=r'holds a Tensor of shape \(3,\), expected a dict'):
        build(tiny_arch, tmp_path / 'tensor.pth')


def test_missing_file_is_an_error_with_an_opt_out(tiny_arch, tmp_path):
    absent = str(tmp_path / 'absent.pth')
    model = SPANet(tiny_arch, init_cfg=dict(type='Pretrained', checkpoint=absent))
    with pytest.raises(CheckpointError) as info:
        model.init_weights()
    message = str(info.value)
    assert f"pretrained checkpoint '{absent}' not found" in message
    assert 'README.md, section "Pretrained weights"' in message
    assert 'SPANet-official/releases' in message
    assert '--cfg-options model.backbone.init_cfg=None' in message
    # The documented opt-out: no init_cfg, the default initialisation, no error.
    SPANet(tiny_arch, init_cfg=None).init_weights()


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


def test_convert_spanetv2_release_file(tmp_path):
    """The converter also takes SPANetV2 release files: classifier norm -> backbone.norm3
    (the pooled norm of gap_before_final_norm=True), head.* kept for SPANetV2ClsHead."""
    import inspect

    from spanet_mm.models.spanetv2 import SPANetV2
    from spanet_mm.reference.spanetv2 import ReferenceSPANetV2
    arch = SPANetV2.resolve_arch(dict(embed_dims=[16, 32, 64, 64], depths=[1, 1, 2, 1]))
    params = inspect.signature(ReferenceSPANetV2).parameters
    reference = ReferenceSPANetV2(**{k: v for k, v in arch.items() if k in params},
                                  num_classes=10)
    release = {k: v for k, v in reference.state_dict().items()
               if not re.match(r'norm\d', k)}  # the ImageNet file has no dense norms
    torch.save(release, tmp_path / 'v2.pth')
    convert = [sys.executable, str(ROOT / 'tools' / 'convert_release_checkpoint.py'),
               str(tmp_path / 'v2.pth'), str(tmp_path / 'v2_plain.pth')]
    done = subprocess.run(convert, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plain = torch.load(tmp_path / 'v2_plain.pth', weights_only=True)
    assert torch.equal(plain['backbone.norm3.bias'], release['norm.bias'])
    assert torch.equal(plain['head.fc1.weight'], release['head.fc1.weight'])
    assert not any(k.startswith('norm.') for k in plain)
    assert sum(k.startswith('backbone.') for k in plain) + sum(
        k.startswith('head.') for k in plain) == len(plain) == len(release)

    classifier = SPANetV2(arch, out_indices=(3, ), gap_before_final_norm=True)
    from spanet_mm.checkpoint import load_pretrained
    load_pretrained(classifier, str(tmp_path / 'v2_plain.pth'))
    assert torch.equal(classifier.norm3.weight, release['norm.weight'])

    torch.save({'conv1.weight': torch.zeros(2, 3, 1, 1)}, tmp_path / 'resnet.pth')
    refused = subprocess.run(convert[:2] + [str(tmp_path / 'resnet.pth'),
                                            str(tmp_path / 'x.pth')], capture_output=True,
                             text=True)
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
