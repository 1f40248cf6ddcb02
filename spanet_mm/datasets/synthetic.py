"""Small generated datasets in the real on-disk formats of COCO, ADE20K and ImageNet.

Each generator writes files that the codebases' own dataset classes read unmodified
(``mmdet.datasets.CocoDataset``, ``mmseg.datasets.ADE20KDataset``,
``mmpretrain.datasets.ImageNet``), so tests and the demo exercise the real loading,
augmentation and evaluation code. The content is simple but learnable: what is drawn
in the image is what the labels say. Everything is deterministic given ``seed``.
"""

import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

# The 80 COCO category ids in MMDetection's class order (ids 1-90 with ten unused).
_UNUSED_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in _UNUSED_COCO_IDS)

# The shapes drawn by make_coco_shapes, in label order; their category ids are 1-3 in
# both category variants.
SHAPES = ('circle', 'square', 'triangle')
# In the COCO-named variant the shapes stand for the first three COCO categories, so that
# labels 0-2 of an unmodified 80-class COCO model mean circle, square, triangle.
SHAPE_CLASSES = ('person', 'bicycle', 'car')
# What make_coco_shapes(categories=...) accepts.
COCO_SHAPES_CATEGORIES = ('shapes', 'coco')

# ADE20K label ids (1-based, as stored in its PNGs) drawn by make_ade20k_like, each with
# a base colour (RGB) and a texture, so that appearance predicts the label.
ADE20K_REGIONS = {
    3: ((90, 150, 230), 'smooth'),  # sky
    5: ((40, 130, 40), 'noisy'),  # tree
    7: ((110, 110, 110), 'stripes'),  # road
    10: ((120, 200, 60), 'dots'),  # grass
}

# The first ten ImageNet-1K synsets in the standard (sorted) order, i.e. the classes
# 0-9 of mmpretrain's IMAGENET_CATEGORIES (tench, goldfish, great white shark, ...).
IMAGENET_WNIDS = (
    'n01440764',
    'n01443537',
    'n01484850',
    'n01491361',
    'n01494475',
    'n01496331',
    'n01498041',
    'n01514668',
    'n01514859',
    'n01518878',
)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field with pixel noise (uint8 RGB, size x size)."""
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    field = 0.6 * field + 0.4 * 128 + rng.normal(0, 12, (size, size, 3))
    return np.clip(field, 0, 255).astype(np.uint8)


def _shape_polygon(
    rng: np.random.Generator, shape: str, cx: float, cy: float, radius: float
) -> np.ndarray:
    """Vertices (N, 2) of a circle (24-gon), a rotated square or a rotated triangle."""
    if shape == 'circle':
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    elif shape == 'square':
        angles = np.pi / 4 + np.arange(4) * np.pi / 2 + rng.uniform(-0.3, 0.3)
    else:
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.5, 0.5)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x1, y1, x2, y2] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _shapes_image(
    rng: np.random.Generator, size: int, max_shapes: int
) -> Tuple[np.ndarray, List[dict]]:
    """One image with 1..max_shapes non-overlapping shapes (about 1 in 50 with none)."""
    image = _background(rng, size)
    count = 0 if rng.random() < 0.02 else int(rng.integers(1, max_shapes + 1))
    objects, boxes = [], []
    for _ in range(20 * count):  # rejection sampling keeps shapes apart
        if len(objects) == count:
            break
        label = int(rng.integers(len(SHAPES)))
        radius = rng.uniform(0.08, 0.22) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        poly = _shape_polygon(rng, SHAPES[label], cx, cy, radius)
        poly = np.clip(poly, 0, size - 1)
        box = [*poly.min(0), *poly.max(0)]
        if any(_box_iou(box, other) > 0 for other in boxes):
            continue
        # Saturated colours far from the muted background; the shape, not the colour,
        # tells the class.
        colour = rng.permutation([rng.uniform(200, 255), rng.uniform(0, 60), rng.uniform(0, 255)])
        cv2.fillPoly(image, [np.round(poly).astype(np.int32)], colour.tolist())
        boxes.append(box)
        objects.append(dict(label=label, polygon=np.round(poly).astype(np.int32)))
    return image, objects


def _coco_split(
    rng: np.random.Generator,
    img_dir: str,
    ann_file: str,
    num_images: int,
    size: int,
    max_shapes: int,
    first_ann_id: int,
    categories: List[dict],
) -> int:
    """Write one split's images and its instances json (listing ``categories``); returns the
    next annotation id."""
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    ann_id = first_ann_id
    for index in range(num_images):
        image_id = index + 1
        file_name = f'{image_id:012d}.jpg'
        image, objects = _shapes_image(rng, size, max_shapes)
        cv2.imwrite(osp.join(img_dir, file_name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for obj in objects:
            poly = obj['polygon']
            x1, y1 = poly.min(0)
            x2, y2 = poly.max(0)
            annotations.append(
                dict(
                    id=ann_id,
                    image_id=image_id,
                    category_id=COCO_CATEGORY_IDS[obj['label']],
                    segmentation=[poly.astype(float).ravel().tolist()],
                    area=float(cv2.contourArea(poly.astype(np.float32))),
                    bbox=[float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    iscrowd=0,
                )
            )
            ann_id += 1
    with open(ann_file, 'w') as f:
        json.dump(
            dict(
                info=dict(description='spanet_mm generated shapes'),
                licenses=[],
                images=images,
                annotations=annotations,
                categories=categories,
            ),
            f,
        )
    return ann_id


def _coco_categories(categories: str) -> Tuple[List[dict], Tuple[str, ...]]:
    """The json's category list of one variant and the names of the shapes' categories."""
    if categories == 'shapes':
        listed = [
            dict(id=cat_id, name=name, supercategory='shape')
            for cat_id, name in zip(COCO_CATEGORY_IDS, SHAPES)
        ]
        return listed, SHAPES
    if categories == 'coco':
        # MMDetection (heavy to import) only for this variant: COCO's 80 class names.
        from mmdet.datasets import CocoDataset

        # All 80 are listed so that an 80-class model's predictions map to category ids;
        # the unused ones simply have no ground truth.
        listed = [
            dict(id=cat_id, name=name, supercategory='none')
            for cat_id, name in zip(COCO_CATEGORY_IDS, CocoDataset.METAINFO['classes'])
        ]
        return listed, SHAPE_CLASSES
    raise ValueError(f'categories must be one of {COCO_SHAPES_CATEGORIES}, got {categories!r}')


def make_coco_shapes(
    root: str,
    num_train: int = 400,
    num_val: int = 50,
    image_size: int = 128,
    seed: int = 0,
    max_shapes: int = 3,
    categories: str = 'shapes',
) -> Dict:
    """Write a COCO 2017-style detection/instance dataset of coloured shapes.

    Layout: ``root/{train2017,val2017}/*.jpg`` and
    ``root/annotations/instances_{train,val}2017.json`` with boxes ``[x, y, w, h]``,
    polygon ``segmentation``, ``area`` and ``iscrowd=0``. Circles, squares and triangles
    have the category ids 1, 2 and 3. What the json calls them depends on ``categories``:

    * ``'shapes'`` (default): three categories named ``circle``, ``square`` and
      ``triangle``; read them with MMDetection's ``CocoDataset`` and ``CocoMetric`` given
      ``metainfo=dict(classes=('circle', 'square', 'triangle'))`` and a 3-class head.
    * ``'coco'``: all 80 COCO categories, the shapes standing for ``person``, ``bicycle``
      and ``car``, so that unmodified 80-class COCO configs train and evaluate on it.

    Args:
        root (str): Directory to write into (created if missing).
        num_train (int): Number of training images.
        num_val (int): Number of held-out images.
        image_size (int): Side of the square images in pixels.
        seed (int): Random seed; equal seeds give identical images and boxes in both
            variants.
        max_shapes (int): Most shapes per image.
        categories (str): ``'shapes'`` or ``'coco'``, the category names (see above).

    Returns:
        dict: ``data_root``, ``train_ann``, ``val_ann`` (paths of the json files),
        ``train_img_dir``, ``val_img_dir``, ``categories`` (the variant) and ``classes``
        (the names of categories 1-3, i.e. of labels 0-2: circle, square, triangle in the
        ``'shapes'`` variant, person, bicycle, car in the ``'coco'`` one).

    Raises:
        ValueError: If a count or size is not positive, ``image_size`` is under 32, or
            ``categories`` is not ``'shapes'`` or ``'coco'``.
    """
    _check_positive(
        num_train=num_train, num_val=num_val, image_size=image_size, max_shapes=max_shapes
    )
    if image_size < 32:
        raise ValueError(f'image_size must be at least 32, got {image_size}')
    listed, classes = _coco_categories(categories)
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = dict(
        data_root=root,
        train_ann=osp.join(root, 'annotations', 'instances_train2017.json'),
        val_ann=osp.join(root, 'annotations', 'instances_val2017.json'),
        train_img_dir=osp.join(root, 'train2017'),
        val_img_dir=osp.join(root, 'val2017'),
        categories=categories,
        classes=classes,
    )
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    next_id = _coco_split(
        train_rng,
        out['train_img_dir'],
        out['train_ann'],
        num_train,
        image_size,
        max_shapes,
        1,
        listed,
    )
    _coco_split(
        val_rng,
        out['val_img_dir'],
        out['val_ann'],
        num_val,
        image_size,
        max_shapes,
        next_id,
        listed,
    )
    return out


def _texture(rng: np.random.Generator, kind: str, colour: Sequence[int], size: int) -> np.ndarray:
    """A full-size float RGB texture of one region kind."""
    base = np.broadcast_to(np.asarray(colour, np.float32), (size, size, 3)).copy()
    if kind == 'noisy':
        base += rng.normal(0, 30, (size, size, 1))
    elif kind == 'stripes':
        base += 40 * (np.arange(size) // 4 % 2)[None, :, None]
    elif kind == 'dots':
        base += 60 * (rng.random((size, size, 1)) < 0.1)
    return base + rng.normal(0, 6, (size, size, 3))


def _scene(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """An image and its ADE20K-convention label map (0 = other) of a random scene."""
    class_ids = list(ADE20K_REGIONS)
    label = np.zeros((size, size), np.uint8)
    # Sky above a random horizon, ground below it, then a few blobs and an unlabelled
    # ("other") patch on top.
    horizon = int(rng.uniform(0.3, 0.6) * size)
    label[:horizon] = 3
    label[horizon:] = rng.choice([7, 10])
    for _ in range(int(rng.integers(1, 4))):
        centre = tuple(int(v) for v in rng.uniform(0, size, 2))
        axes = tuple(int(v) for v in rng.uniform(0.08, 0.25, 2) * size)
        cv2.ellipse(
            label, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.choice(class_ids)), -1
        )
    x, y = (int(v) for v in rng.uniform(0, 0.8 * size, 2))
    w, h = (int(v) for v in rng.uniform(0.05, 0.2, 2) * size)
    label[y : y + h, x : x + w] = 0
    image = rng.uniform(0, 255, (1, 1, 3)) + rng.normal(0, 20, (size, size, 3))
    for class_id, (colour, kind) in ADE20K_REGIONS.items():
        region = label == class_id
        image[region] = _texture(rng, kind, colour, size)[region]
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_ade20k_like(
    root: str, num_train: int = 16, num_val: int = 4, image_size: int = 128, seed: int = 0
) -> Dict:
    """Write an ADE20K (ADEChallengeData2016)-style semantic segmentation dataset.

    Layout: ``root/images/{training,validation}/*.jpg`` and
    ``root/annotations/{training,validation}/*.png`` (same stems), labels as uint8 with
    ADE20K's convention: 0 is "other" (ignored with ``reduce_zero_label=True``) and
    1-150 are the classes. Scenes of sky (3), tree (5), road (7) and grass (10), each
    with its own colour and texture.

    Args:
        root (str): Directory to write into (created if missing).
        num_train (int): Number of training images.
        num_val (int): Number of validation images.
        image_size (int): Side of the square images in pixels.
        seed (int): Random seed; equal seeds give identical files.

    Returns:
        dict: ``data_root``, ``train_img_dir``, ``train_ann_dir``, ``val_img_dir``,
        ``val_ann_dir`` (relative to ``data_root``, as ADE20K configs' ``data_prefix``
        wants them) and ``class_ids`` (the 1-based label ids drawn).
    """
    _check_positive(num_train=num_train, num_val=num_val, image_size=image_size)
    out = dict(
        data_root=root,
        train_img_dir='images/training',
        train_ann_dir='annotations/training',
        val_img_dir='images/validation',
        val_ann_dir='annotations/validation',
        class_ids=tuple(ADE20K_REGIONS),
    )
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]
    for split, num, rng, prefix in (
        ('training', num_train, rngs[0], 'train'),
        ('validation', num_val, rngs[1], 'val'),
    ):
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for index in range(num):
            stem = f'ADE_{prefix}_{index + 1:08d}'
            image, label = _scene(rng, image_size)
            cv2.imwrite(
                osp.join(img_dir, stem + '.jpg'), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            cv2.imwrite(osp.join(ann_dir, stem + '.png'), label)
    return out


def _class_image(rng: np.random.Generator, class_index: int, size: int) -> np.ndarray:
    """An image whose stripe orientation and hue depend on the class."""
    angle = np.pi * class_index / 10 + rng.normal(0, 0.05)
    period = 6 + 2 * (class_index % 3)
    ys, xs = np.mgrid[:size, :size]
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period
    wave = np.sin(phase + rng.uniform(0, 2 * np.pi))[..., None]
    hue = np.array([np.cos(class_index), np.cos(class_index + 2), np.cos(class_index + 4)])
    image = 128 + 50 * hue + 60 * wave + rng.normal(0, 15, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_imagenet_like(
    root: str,
    num_classes: int = 4,
    train_per_class: int = 8,
    val_per_class: int = 2,
    image_size: int = 64,
    seed: int = 0,
) -> Dict:
    """Write an ImageNet-1K-style classification dataset of the first ImageNet classes.

    Layout, as MMPretrain's ``ImageNet`` (``split='train'``/``'val'``) reads it:
    ``root/train/<wnid>/<wnid>_<n>.JPEG``, ``root/val/ILSVRC2012_val_<n>.JPEG`` (flat,
    as the official validation set) and ``root/meta/{train,val}.txt`` with lines
    ``<path relative to the split folder> <class index>``. The annotation files are what
    make labels index the 1000 classes: without them MMPretrain would count the class
    folders and refuse fewer than 1000. The wnids are the first ``num_classes`` of the
    1000, so class index ``i`` is ``IMAGENET_CATEGORIES[i]``.

    Args:
        root (str): Directory to write into (created if missing).
        num_classes (int): Number of classes, at most 10.
        train_per_class (int): Training images per class.
        val_per_class (int): Validation images per class.
        image_size (int): Side of the square images in pixels.
        seed (int): Random seed; equal seeds give identical files.

    Returns:
        dict: ``data_root``, ``train_ann``, ``val_ann`` (paths of the meta files),
        ``wnids`` and ``labels`` (the class indices used).
    """
    _check_positive(
        num_classes=num_classes,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        image_size=image_size,
    )
    if num_classes > len(IMAGENET_WNIDS):
        raise ValueError(f'num_classes must be at most {len(IMAGENET_WNIDS)}, got {num_classes}')
    rng = np.random.default_rng(seed)
    wnids = IMAGENET_WNIDS[:num_classes]
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    os.makedirs(osp.join(root, 'val'), exist_ok=True)
    train_lines, val_lines = [], []
    for label, wnid in enumerate(wnids):
        os.makedirs(osp.join(root, 'train', wnid), exist_ok=True)
        for n in range(train_per_class):
            rel = f'{wnid}/{wnid}_{n + 1}.JPEG'
            cv2.imwrite(osp.join(root, 'train', rel), _class_image(rng, label, image_size))
            train_lines.append(f'{rel} {label}')
    # Validation images are interleaved across classes as in the official set.
    val_labels = [label for _ in range(val_per_class) for label in range(num_classes)]
    for n, label in enumerate(val_labels):
        name = f'ILSVRC2012_val_{n + 1:08d}.JPEG'
        cv2.imwrite(osp.join(root, 'val', name), _class_image(rng, label, image_size))
        val_lines.append(f'{name} {label}')
    out = dict(
        data_root=root,
        train_ann=osp.join(root, 'meta', 'train.txt'),
        val_ann=osp.join(root, 'meta', 'val.txt'),
        wnids=wnids,
        labels=tuple(range(num_classes)),
    )
    for path, lines in ((out['train_ann'], train_lines), (out['val_ann'], val_lines)):
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return out
