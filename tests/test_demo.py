"""The main job (spanet_mm.demo behind tools/demo.py) runs end to end in reduced form, and the
backbone demo reports what the filter does."""
import glob
import re

import pytest
import torch
from helpers.commands import REPO_ROOT, run_command, tool

from spanet_mm.demo import backbone_demo, low_frequency_share


@pytest.mark.slow
def test_demo_quick_run(tmp_path):
    work_dir = tmp_path / 'demo'
    # As a new user runs it: the script, from another directory.
    output = run_command(['python', tool('demo.py'), '--quick', '--work-dir', work_dir],
                         timeout=600, cwd=tmp_path)

    # MMEngine progress lines and a real COCO evaluation of the held-out split.
    assert re.search(r'Iter\(train\) \[\s*10/20\]', output)
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in output
    found = re.search(r'COCO bbox mAP on 16 held-out images: (\d\.\d{3})', output)
    assert found, output[-3000:]

    pictures = glob.glob(str(work_dir / '*' / 'vis_data' / 'vis_image' / '*.png'))
    assert len(pictures) == 2  # first image of each of the two held-out batches

    checkpoint = work_dir / 'iter_20.pth'
    assert checkpoint.is_file()
    # The checkpoint reloads into a freshly built detector (through the allow-list
    # that importing spanet_mm registers for torch's weights_only loading).
    from mmengine.runner import load_checkpoint

    from spanet_mm.codebases import build_model, load_config
    model = build_model(load_config(str(REPO_ROOT / 'configs' / 'demo' /
                                        'retinanet_spanet_shapes.py')))
    state = load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
    assert state['meta']['iter'] == 20
    saved = state['state_dict']['backbone.stem.weight']
    torch.testing.assert_close(model.backbone.stem.weight, saved)


def test_low_frequency_share():
    constant = torch.ones(1, 2, 16, 16)
    assert low_frequency_share(constant) == pytest.approx(1.0)
    # A checkerboard has all its energy at the highest frequency, outside any small disk.
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1
    assert low_frequency_share(checker[None, None]) == pytest.approx(0.0, abs=1e-12)


def test_backbone_demo_reports_every_stage(tmp_path):
    lines = []
    shares = backbone_demo('spanet:s', log=lines.append)
    assert sorted(shares) == [0, 1, 2, 3]
    # The filter favours low frequencies (balance 0.7 inside the radius, 0.3 outside), so the
    # low-frequency share grows through it.
    assert all(after > before for before, after in shares.values())
    assert lines[0].startswith('spanet:s (') and 'random weights' in lines[0]
    assert len(lines) == 2 + 4
    with pytest.raises(ValueError, match='spanet:ARCH'):
        backbone_demo('convnext:tiny')
