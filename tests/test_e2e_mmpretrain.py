"""End to end on the CPU: the ImageNet config trained with tools/train.py on a generated
ImageNet-format dataset and evaluated with tools/test.py (top-1 accuracy). Distributed
training with this config (tools/dist_train.sh, Slurm) is tested in tests/test_launch.py.

Only data roots, image scale, epochs, batch size and the arch size are overridden, and the
pretrained file is opted out of (``init_cfg=None``); everything else is the real config.
"""
import pickle

import pytest
import torch
from helpers.commands import read_test_metrics, run_command, tool, train_scalars
from helpers.e2e_checks import IMAGENET_CONFIG as CONFIG
from helpers.e2e_checks import IMAGENET_EPOCHS as EPOCHS
from helpers.e2e_checks import tiny_options
from helpers.options import TINY_ARCH


@pytest.mark.slow
def test_classifier_train_and_test(imagenet_options, imagenet_like, tmp_path):
    options = tiny_options(imagenet_options, batch_size=8)
    train_log = run_command(['python', tool('train.py'), CONFIG, '--work-dir',
                             tmp_path / 'train', '--cfg-options', *options])
    assert 'Distributed training: False' in train_log
    # 16 images, 8 per iteration: two iterations per epoch, every one run.
    assert train_scalars(tmp_path / 'train')[-1]['iter'] == 2 * EPOCHS
    checkpoint = tmp_path / 'train' / f'epoch_{EPOCHS}.pth'
    state = torch.load(checkpoint, map_location='cpu')
    assert state['meta']['epoch'] == EPOCHS
    assert state['state_dict']['head.fc.weight'].shape == (1000, TINY_ARCH['embed_dims'][-1])

    out = tmp_path / 'predictions.pkl'
    test_log = run_command(['python', tool('test.py'), CONFIG, checkpoint, '--work-dir',
                            tmp_path / 'test', '--out', out, '--cfg-options', *options])
    assert f'Load checkpoint from {checkpoint}' in test_log
    metrics = read_test_metrics(tmp_path / 'test')
    print('ImageNet e2e metrics:', metrics)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    # One prediction per held-out image, with its true label from the annotation file.
    with open(imagenet_like['val_ann']) as f:
        expected = {line.split()[0]: int(line.split()[1]) for line in f if line.strip()}
    got = {p['img_path'].rpartition('/')[2]: int(p['gt_label'][0]) for p in predictions}
    assert got == expected
    # The dumped predictions are those evaluated: scored here, they give the reported top-1
    # and top-5 (the predicted label is the top score over the 1000 classes).
    top1 = top5 = 0
    for p in predictions:
        scores, label = p['pred_score'], int(p['gt_label'][0])
        assert scores.shape == (1000, ) and int(p['pred_label'][0]) == int(scores.argmax())
        top1 += int(scores.argmax()) == label
        top5 += label in scores.topk(5).indices.tolist()
    assert metrics['accuracy/top1'] == pytest.approx(100 * top1 / len(predictions))
    assert metrics['accuracy/top5'] == pytest.approx(100 * top5 / len(predictions))
