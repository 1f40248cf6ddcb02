"""The main job (tools/demo.py) runs end to end in reduced form."""
import glob
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.mark.slow
def test_demo_quick_run(tmp_path):
    work_dir = tmp_path / 'demo'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--quick', '--work-dir',
         str(work_dir)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr

    # MMEngine progress lines and a real COCO evaluation of the held-out split.
    assert re.search(r'Iter\(train\) \[\s*10/20\]', output)
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in output
    found = re.search(r'COCO bbox mAP on 16 held-out images: (\d\.\d{3})', output)
    assert found, output[-3000:]
    assert 0.0 <= float(found[1]) <= 1.0

    pictures = glob.glob(str(work_dir / '*' / 'vis_data' / 'vis_image' / '*.png'))
    assert len(pictures) == 2  # first image of each of the two held-out batches

    checkpoint = work_dir / 'iter_20.pth'
    assert checkpoint.is_file()
    # The checkpoint reloads into a freshly built detector (through the allow-list
    # that importing spanet_mm registers for torch's weights_only loading).
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'retinanet_spanet_shapes.py'))
    model = MODELS.build(cfg.model)
    state = load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
    assert state['meta']['iter'] == 20
    saved = state['state_dict']['backbone.stem.weight']
    torch.testing.assert_close(model.backbone.stem.weight, saved)
