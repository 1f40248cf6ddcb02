"""The generated datasets load through the codebases' own dataset classes and metrics."""

import filecmp
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from spanet_mm.datasets import make_ade20k_like, make_coco_shapes, make_imagenet_like
from spanet_mm.datasets.synthetic import ADE20K_REGIONS, IMAGENET_WNIDS

SHAPE_NAMES = ('circle', 'square', 'triangle')
COCO_NAMES = ('person', 'bicycle', 'car')


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    """The default variant: categories named after the shapes."""
    return make_coco_shapes(
        str(tmp_path_factory.mktemp('coco')), num_train=24, num_val=8, image_size=96, seed=3
    )


@pytest.fixture(scope='module')
def coco_named(tmp_path_factory):
    """The variant for 80-class COCO configs: the same images, COCO's category names."""
    return make_coco_shapes(
        str(tmp_path_factory.mktemp('coco_named')),
        num_train=24,
        num_val=8,
        image_size=96,
        seed=3,
        categories='coco',
    )


def coco_dataset(info, split='train', with_mask=True, metainfo=None, filter_cfg=None):
    from mmdet.datasets import CocoDataset

    init_default_scope('mmdet')
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
    ]
    return CocoDataset(
        data_root=info['data_root'],
        ann_file=f'annotations/instances_{split}2017.json',
        data_prefix=dict(img=f'{split}2017/'),
        metainfo=metainfo,
        filter_cfg=filter_cfg,
        pipeline=pipeline,
        test_mode=split == 'val',
    )


def load_json(path):
    with open(path) as f:
        return json.load(f)


def test_coco_shapes_files(coco):
    assert sorted(os.listdir(coco['train_img_dir']))[0] == '000000000001.jpg'
    assert len(os.listdir(coco['train_img_dir'])) == 24
    assert len(os.listdir(coco['val_img_dir'])) == 8
    train, val = load_json(coco['train_ann']), load_json(coco['val_ann'])
    assert coco['categories'] == 'shapes' and coco['classes'] == SHAPE_NAMES
    for split in (train, val):
        assert [(c['id'], c['name']) for c in split['categories']] == [
            (1, 'circle'),
            (2, 'square'),
            (3, 'triangle'),
        ]
    ann_ids = [a['id'] for a in train['annotations'] + val['annotations']]
    assert len(ann_ids) == len(set(ann_ids))
    # COCO's own format: [x, y, w, h] boxes around polygon segmentations, areas, iscrowd.
    for ann in train['annotations']:
        assert ann['category_id'] in (1, 2, 3) and ann['iscrowd'] == 0
        xs, ys = ann['segmentation'][0][0::2], ann['segmentation'][0][1::2]
        assert ann['bbox'] == [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        assert 0 < ann['area'] <= ann['bbox'][2] * ann['bbox'][3]
    # Every shape occurs.
    assert {a['category_id'] for a in train['annotations']} == {1, 2, 3}


def test_coco_named_variant_files(coco, coco_named):
    assert coco_named['categories'] == 'coco' and coco_named['classes'] == COCO_NAMES
    train = load_json(coco_named['train_ann'])
    names = {c['id']: c['name'] for c in train['categories']}
    assert len(names) == 80
    assert [names[i] for i in (1, 2, 3)] == list(COCO_NAMES)
    # The same seed draws the same images and boxes; only the names differ.
    assert train['annotations'] == load_json(coco['train_ann'])['annotations']
    assert filecmp.cmp(
        osp.join(coco['val_img_dir'], '000000000001.jpg'),
        osp.join(coco_named['val_img_dir'], '000000000001.jpg'),
        shallow=False,
    )


def check_first_annotated_sample(dataset, info):
    """Boxes, labels and masks of the first image with shapes are the json's."""
    anns = load_json(info['train_ann'])['annotations']
    sample = None
    for index in range(len(dataset)):
        data = dataset.get_data_info(index)
        expected = [a for a in anns if a['image_id'] == data['img_id']]
        if expected:
            sample = dataset[index]
            break
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in expected)])
    np.testing.assert_allclose(sample['gt_bboxes'].numpy(), boxes)
    # Category ids 1-3 are labels 0-2 in both variants.
    assert sample['gt_bboxes_labels'].tolist() == [a['category_id'] - 1 for a in expected]
    masks = sample['gt_masks'].to_ndarray()
    assert masks.shape == (len(expected), 96, 96)
    image = sample['img'].astype(np.float32)
    for mask, ann in zip(masks, expected):
        # The rasterised polygon covers the drawn shape: inside it the colour is flat.
        assert abs(mask.sum() - ann['area']) < 0.25 * ann['area'] + 20
        inside = image[mask.astype(bool)]
        assert inside.std(0).max() < 25


def test_coco_shapes_load_with_mmdet(coco):
    dataset = coco_dataset(coco, metainfo=dict(classes=SHAPE_NAMES))
    assert len(dataset) == 24
    assert dataset.metainfo['classes'] == SHAPE_NAMES
    assert dataset.cat_ids == [1, 2, 3]
    check_first_annotated_sample(dataset, coco)


def test_coco_shapes_need_their_class_names(coco):
    """Read with the 80 COCO class names, the shapes-named json matches no category (what
    the ``'coco'`` variant is for): no annotations, and training configs' filter of images
    without any refuses it."""
    dataset = coco_dataset(coco)
    assert dataset.cat_ids == []
    assert all(not dataset.get_data_info(i)['instances'] for i in range(len(dataset)))
    with pytest.raises(ValueError):
        coco_dataset(coco, filter_cfg=dict(filter_empty_gt=True))


def test_coco_named_variant_loads_with_mmdet_unmodified(coco_named):
    from mmdet.datasets import CocoDataset

    dataset = coco_dataset(coco_named)
    assert len(dataset) == 24
    assert dataset.metainfo['classes'] == CocoDataset.METAINFO['classes']
    assert len(dataset.metainfo['classes']) == 80
    check_first_annotated_sample(dataset, coco_named)


@pytest.mark.parametrize('variant', ['coco', 'coco_named'])
def test_coco_shapes_three_class_metainfo_and_metric(variant, request):
    """A 3-class config naming a variant's classes sees labels 0-2; CocoMetric scores ground
    truth as mAP 1."""
    from mmdet.evaluation import CocoMetric

    info = request.getfixturevalue(variant)
    dataset = coco_dataset(info, 'val', with_mask=False, metainfo=dict(classes=info['classes']))
    assert dataset.metainfo['classes'] == info['classes']
    metric = CocoMetric(ann_file=info['val_ann'], metric='bbox')
    metric.dataset_meta = dataset.metainfo
    seen = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        instances = dataset.get_data_info(index)['instances']
        boxes = torch.tensor([i['bbox'] for i in instances]).reshape(-1, 4)
        labels = torch.tensor([i['bbox_label'] for i in instances], dtype=torch.long)
        seen += len(labels)
        pred = dict(bboxes=boxes, labels=labels, scores=torch.ones(len(labels)))
        metric.process(
            {}, [dict(pred_instances=pred, img_id=sample['img_id'], ori_shape=sample['ori_shape'])]
        )
    assert seen > 0
    result = metric.evaluate(len(dataset))
    assert result['coco/bbox_mAP'] == pytest.approx(1.0)


def test_coco_shapes_deterministic(tmp_path):
    kwargs = dict(num_train=3, num_val=2, image_size=64)
    a = make_coco_shapes(str(tmp_path / 'a'), seed=1, **kwargs)
    b = make_coco_shapes(str(tmp_path / 'b'), seed=1, **kwargs)
    c = make_coco_shapes(str(tmp_path / 'c'), seed=2, **kwargs)
    assert filecmp.cmp(a['train_ann'], b['train_ann'], shallow=False)
    assert filecmp.cmp(
        osp.join(a['val_img_dir'], '000000000001.jpg'),
        osp.join(b['val_img_dir'], '000000000001.jpg'),
        shallow=False,
    )
    assert not filecmp.cmp(a['train_ann'], c['train_ann'], shallow=False)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match='num_train'):
        make_coco_shapes(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match="categories must be one of.*got 'lvis'"):
        make_coco_shapes(str(tmp_path), categories='lvis')
    with pytest.raises(ValueError, match='num_classes must be at most 10, got 11'):
        make_imagenet_like(str(tmp_path), num_classes=11)


def test_ade20k_like_loads_with_mmseg(tmp_path):
    from mmseg.datasets import ADE20KDataset

    init_default_scope('mmseg')
    info = make_ade20k_like(str(tmp_path), num_train=4, num_val=2, image_size=64)
    for split, num in (('train', 4), ('val', 2)):
        dataset = ADE20KDataset(
            data_root=info['data_root'],
            data_prefix=dict(
                img_path=info[f'{split}_img_dir'], seg_map_path=info[f'{split}_ann_dir']
            ),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')],
        )
        assert len(dataset) == num
    sample = dataset[0]
    raw = cv2.imread(dataset.get_data_info(0)['seg_map_path'], cv2.IMREAD_UNCHANGED)
    seg = sample['gt_seg_map']
    assert seg.shape == (64, 64) == raw.shape
    # reduce_zero_label: 0 ("other") becomes 255 (ignored) and ids shift down by one.
    np.testing.assert_array_equal(seg[raw == 0], 255)
    np.testing.assert_array_equal(seg[raw > 0], raw[raw > 0].astype(int) - 1)
    assert set(np.unique(raw)) <= {0, *ADE20K_REGIONS}
    assert dataset.metainfo['classes'][3 - 1] == 'sky'
    # Appearance predicts the label: each class's mean colour is near its base colour.
    image = sample['img'][..., ::-1].astype(np.float32)
    for class_id, (colour, _) in ADE20K_REGIONS.items():
        if (raw == class_id).sum() > 50:
            mean = image[raw == class_id].mean(0)
            assert np.abs(mean - colour).max() < 35, (class_id, mean, colour)


def test_imagenet_like_loads_with_mmpretrain(tmp_path):
    from mmpretrain.datasets import ImageNet
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

    init_default_scope('mmpretrain')
    info = make_imagenet_like(
        str(tmp_path), num_classes=3, train_per_class=4, val_per_class=2, image_size=32
    )
    train = ImageNet(
        data_root=info['data_root'], split='train', pipeline=[dict(type='LoadImageFromFile')]
    )
    val = ImageNet(
        data_root=info['data_root'], split='val', pipeline=[dict(type='LoadImageFromFile')]
    )
    assert len(train) == 12 and len(val) == 6
    assert len(train.CLASSES) == 1000 and train.CLASSES[0] == IMAGENET_CATEGORIES[0]
    for index in range(len(train)):
        data = train.get_data_info(index)
        wnid = osp.basename(osp.dirname(data['img_path']))
        assert wnid == IMAGENET_WNIDS[data['gt_label']]
    assert sorted(val.get_gt_labels().tolist()) == [0, 0, 1, 1, 2, 2]
    assert train[0]['img'].shape == (32, 32, 3)
    assert val[0]['img'].shape == (32, 32, 3)
