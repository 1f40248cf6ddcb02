"""Checks of what the end-to-end runs wrote (predictions, metrics), shared by the e2e,
launch and external-config tests, and the ImageNet config's tiny-run options."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spanet_mm.datasets.synthetic import COCO_CATEGORY_IDS

from helpers.commands import REPO_ROOT
from helpers.options import TINY_ARCH, arch_options, cfg_options

# ADE20K's 150 classes are label ids 1-150; 0 ("other") is ignored (reduce_zero_label).
NUM_CLASSES = 150

IMAGENET_CONFIG = REPO_ROOT / 'configs/mmpretrain/spanet_s_in1k.py'
IMAGENET_EPOCHS = 2


def check_predictions(predictions, ann_file, max_per_img, test_shape=None):
    """Each image's predictions are well formed and in its original coordinates: at most
    ``max_per_img``, scores in [0, 1] in decreasing order, labels among the 80 classes,
    boxes inside the image, masks (if any) of the image's size, also when the network saw
    the image resized to ``test_shape`` (checked, if given)."""
    coco = COCO(ann_file)
    assert sorted(p['img_id'] for p in predictions) == sorted(coco.getImgIds())
    for p in predictions:
        info = coco.imgs[p['img_id']]
        height, width = info['height'], info['width']
        assert tuple(p['ori_shape']) == (height, width)
        if test_shape is not None:
            assert tuple(p['img_shape']) == tuple(test_shape)
        pred = p['pred_instances']
        boxes, scores, labels = pred['bboxes'], pred['scores'], pred['labels']
        assert 0 < len(scores) <= max_per_img and boxes.shape == (len(scores), 4)
        assert torch.all(scores[:-1] >= scores[1:]) and 0 <= scores.min() <= scores.max() <= 1
        assert 0 <= labels.min() <= labels.max() < len(COCO_CATEGORY_IDS)
        tolerance = 1e-3  # float rounding at the borders
        assert torch.all(boxes[:, 2:] >= boxes[:, :2])
        assert boxes[:, 0::2].min() >= -tolerance and boxes[:, 0::2].max() <= width + tolerance
        assert boxes[:, 1::2].min() >= -tolerance and boxes[:, 1::2].max() <= height + tolerance
        for rle in pred.get('masks', []):
            assert tuple(rle['size']) == (height, width)


def coco_map(predictions, ann_file, iou_type):
    """COCO mAP and mAP@0.5 of the dumped predictions, computed with pycocotools alone."""
    results = []
    for p in predictions:
        pred = p['pred_instances']
        for i, (box, score, label) in enumerate(
            zip(pred['bboxes'].tolist(), pred['scores'].tolist(), pred['labels'].tolist())
        ):
            x1, y1, x2, y2 = box
            result = dict(
                image_id=p['img_id'],
                category_id=COCO_CATEGORY_IDS[label],
                score=score,
                bbox=[x1, y1, x2 - x1, y2 - y1],
            )
            if iou_type == 'segm':
                result['segmentation'] = pred['masks'][i]
            results.append(result)
    coco = COCO(ann_file)
    evaluator = COCOeval(coco, coco.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats[0], evaluator.stats[1]


def label_maps(directory):
    """The label PNGs of ``directory``, by file stem."""
    return {
        path.stem: cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int64)
        for path in sorted(Path(directory).glob('*.png'))
    }


def seg_scores(predictions, labels):
    """aAcc and mIoU in percent, as MMSegmentation's IoUMetric computes them: areas summed
    over the images, IoU of every class in the prediction or the labels, 0 ignored."""
    intersect = np.zeros(NUM_CLASSES + 1)
    pred_area = np.zeros(NUM_CLASSES + 1)
    label_area = np.zeros(NUM_CLASSES + 1)
    for pred, label in zip(predictions, labels):
        valid = label > 0
        pred, label = pred[valid], label[valid]
        bins = dict(minlength=NUM_CLASSES + 1)
        intersect += np.bincount(label[pred == label], **bins)
        pred_area += np.bincount(pred, **bins)
        label_area += np.bincount(label, **bins)
    union = pred_area + label_area - intersect
    present = union[1:] > 0
    iou = intersect[1:][present] / union[1:][present]
    return 100 * intersect.sum() / label_area.sum(), 100 * iou.mean()


def image_blind_scores(train_labels, val_labels):
    """Scores of the best prediction that ignores the image: at every pixel position, the
    class most frequent there in the training labels (the sky is on top, say). An untrained
    model, or one that learnt only the class statistics, scores no better."""
    stack = np.stack(list(train_labels))
    counts = np.stack([(stack == c).sum(0) for c in range(NUM_CLASSES + 1)])
    counts[0] = -1  # never predict the ignored label
    prior = counts.argmax(0)
    return seg_scores([prior] * len(val_labels), val_labels)


def tiny_options(imagenet_options, batch_size, epochs=IMAGENET_EPOCHS):
    """The config on the generated data with the tiny arch, for ``epochs`` epochs."""
    return (
        imagenet_options
        + arch_options()
        + cfg_options(
            model__backbone__init_cfg=None,
            train_cfg__max_epochs=epochs,
            train_dataloader__batch_size=batch_size,
            val_dataloader__batch_size=batch_size,
            test_dataloader__batch_size=batch_size,
            model__head__in_channels=TINY_ARCH['embed_dims'][-1],
        )
    )


def check_classification(predictions, val_ann, metrics):
    """One prediction per held-out image with its true label from the annotation file, and the
    reported top-1/top-5 are those of the dumped predictions (the predicted label is the top
    score over the 1000 classes)."""
    with open(val_ann) as f:
        expected = {line.split()[0]: int(line.split()[1]) for line in f if line.strip()}
    got = {p['img_path'].rpartition('/')[2]: int(p['gt_label'][0]) for p in predictions}
    assert got == expected
    top1 = top5 = 0
    for p in predictions:
        scores, label = p['pred_score'], int(p['gt_label'][0])
        assert scores.shape == (1000,) and int(p['pred_label'][0]) == int(scores.argmax())
        top1 += int(scores.argmax()) == label
        top5 += label in scores.topk(5).indices.tolist()
    assert metrics['accuracy/top1'] == pytest.approx(100 * top1 / len(predictions))
    assert metrics['accuracy/top5'] == pytest.approx(100 * top5 / len(predictions))
