"""The main job (spanet_tools.demo behind tools/demo.py) runs end to end in reduced form and
leaves readable pictures and a summary; the backbone demo reports what the filter does."""

import json
import re

import cv2
import numpy as np
import pytest
import torch

from spanet_tools.demo import (
    COLOURS,
    GAP,
    HEADER,
    DemoSettings,
    backbone_demo,
    demo_config,
    draw_panel,
    low_frequency_share,
    moving_average,
    save_summary,
)

from helpers.commands import REPO_ROOT, run_command, tool

SHAPES = ('circle', 'square', 'triangle')
DEMO_CONFIG = str(REPO_ROOT / 'configs' / 'demo' / 'retinanet_spanet_shapes.py')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_demo_quick_run(tmp_path):
    work_dir = tmp_path / 'demo'
    # As a new user runs it: the script, from another directory.
    output = run_command(
        ['python', tool('demo.py'), '--quick', '--work-dir', work_dir], timeout=900, cwd=tmp_path
    )

    # MMEngine progress lines and a real COCO evaluation of the held-out split.
    assert re.search(r'Iter\(train\) \[\s*10/20\]', output)
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in output
    found = re.search(
        r'COCO bbox mAP on 16 held-out images: (\d\.\d{3}) \(mAP@0\.5: (\d\.\d{3})\)', output
    )
    assert found, output[-3000:]
    assert float(found.group(1)) <= float(found.group(2))

    # The dataset names its own classes, and the run trained on them.
    annotations = json.loads(
        (work_dir / 'data' / 'annotations' / 'instances_val2017.json').read_text()
    )
    assert [(c['id'], c['name']) for c in annotations['categories']] == list(zip((1, 2, 3), SHAPES))

    # The final lines name the files.
    checkpoint = work_dir / 'iter_20.pth'
    predictions = work_dir / 'predictions'
    summary = work_dir / 'summary.png'
    assert f'checkpoint: {checkpoint}' in output
    assert f'pictures (ground truth | prediction, 4x): 4 images in {predictions}' in output
    assert f'summary (training loss, held-out mAP): {summary}' in output

    # Four held-out images drawn 4x larger, ground truth | prediction, with the titles'
    # band above; MMDetection's own small pictures are no longer drawn.
    pictures = sorted(predictions.glob('*.png'))
    assert [p.name for p in pictures] == [f'{i:012d}.png' for i in range(1, 5)]
    for picture in pictures:
        image = cv2.imread(str(picture))
        assert image.shape == (HEADER + 4 * 128, 2 * 4 * 128 + GAP, 3)
        assert image.shape[0] >= 512
    assert not list(work_dir.glob('*/vis_data/vis_image/*.png'))

    # One summary picture, a real PNG of a readable size.
    data = summary.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
    image = cv2.imread(str(summary))
    assert image is not None and image.shape[0] >= 600 and image.shape[1] >= 800

    assert checkpoint.is_file()
    # The checkpoint reloads into a freshly built detector (through the allow-list
    # that importing spanet_mm registers for torch's weights_only loading).
    from mmengine.runner import load_checkpoint

    from spanet_mm.codebases import build_model, load_config

    model = build_model(load_config(DEMO_CONFIG))
    state = load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
    assert state['meta']['iter'] == 20
    assert tuple(state['meta']['dataset_meta']['classes']) == SHAPES
    saved = state['state_dict']['backbone.stem.weight']
    torch.testing.assert_close(model.backbone.stem.weight, saved)


def test_demo_config_names_the_shapes(tmp_path):
    data = dict(data_root=str(tmp_path), val_ann=str(tmp_path / 'val.json'), classes=SHAPES)
    cfg = demo_config(DemoSettings(DEMO_CONFIG, str(tmp_path / 'work'), iters=7), data)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert tuple(loader.dataset.metainfo['classes']) == SHAPES
        assert loader.dataset.data_root == str(tmp_path) + '/'
    assert cfg.model.bbox_head.num_classes == 3
    assert cfg.val_evaluator.ann_file == str(tmp_path / 'val.json')
    assert cfg.train_cfg.max_iters == 7
    # Data named otherwise (the COCO-named variant) does not fit the demo's datasets.
    with pytest.raises(ValueError, match="generated classes \\('person'"):
        demo_config(
            DemoSettings(DEMO_CONFIG, str(tmp_path / 'work')),
            dict(data, classes=('person', 'bicycle', 'car')),
        )


def test_draw_panel_enlarges_and_labels():
    image = np.full((32, 48, 3), 90, np.uint8)
    boxes = np.array([[4, 6, 20, 26], [30, 2, 44, 14]], np.float32)
    panel = draw_panel(image, boxes, [2, 0], SHAPES, 'ground truth', scale=4, scores=[0.9, 0.5])
    assert panel.shape == (HEADER + 128, 192, 3)
    body = panel[HEADER:]
    # Each box is drawn in its class colour at 4x the image's coordinates: on the left edge
    # of the triangle's box (x 16) and the right edge of the circle's (x 176), not inside.
    np.testing.assert_array_equal(body[64, 16], COLOURS[2])
    np.testing.assert_array_equal(body[45, 176], COLOURS[0])
    np.testing.assert_array_equal(body[64, 60], (90, 90, 90))
    # The title is dark text on the white band.
    assert (panel[:HEADER] == 255).all(-1).mean() > 0.8
    assert (panel[:HEADER] < 100).all(-1).any()
    # No boxes: only the enlarged image.
    empty = draw_panel(image, np.zeros((0, 4)), [], SHAPES, 'prediction', scale=4)
    assert (empty[HEADER:] == 90).all()


def test_moving_average():
    np.testing.assert_allclose(moving_average(np.array([2.0, 4, 6, 8]), 2), [2, 3, 5, 7])
    np.testing.assert_allclose(moving_average(np.arange(5.0), 10), [0, 0.5, 1, 1.5, 2])


def test_save_summary_writes_a_png(tmp_path):
    steps = np.arange(1, 51)
    losses = dict(loss=3 / steps + 0.5, loss_cls=2 / steps, loss_bbox=1 / steps + 0.5)
    picture = tmp_path / 'picture.png'
    cv2.imwrite(str(picture), np.full((552, 1032, 3), 200, np.uint8))
    with_picture = save_summary(str(tmp_path / 'a.png'), losses, 0.45, 0.8, 50, str(picture))
    alone = save_summary(str(tmp_path / 'b' / 'b.png'), losses, 0.45, 0.8, 50)
    with open(with_picture, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    tall, short = cv2.imread(with_picture), cv2.imread(alone)
    assert tall.shape[1] == short.shape[1] == 1000
    assert tall.shape[0] > short.shape[0] >= 400


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
