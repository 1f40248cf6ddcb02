"""Fixtures shared by the test suite (helper functions live in tests/helpers/)."""

import copy

import pytest
import torch

from helpers.options import (
    COCO_NUM_TRAIN,
    COCO_NUM_VAL,
    E2E_IMAGE_SIZE,
    TINY_ARCH,
    TINY_HYBRID_V2_ARCH,
    cfg_options,
    coco_data_options,
)
from helpers.spanet_formulas import to_release_layout


@pytest.fixture
def tiny_arch():
    return dict(TINY_ARCH)


@pytest.fixture
def one_stage_spanet():
    """A SPANet of one small stage (eval mode, its one output): the cheapest to compile."""
    from spanet_mm import SPANet

    return SPANet(
        dict(embed_dims=[12], depths=[1], radii=[2], res_scale=[False]), out_indices=(0,)
    ).eval()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def release_layout():
    """:func:`helpers.spanet_formulas.to_release_layout`."""
    return to_release_layout


@pytest.fixture(scope='session')
def coco_shapes(tmp_path_factory):
    """Generated shapes named as COCO categories (all 80 listed; circle, square, triangle
    are person, bicycle, car), which the repository's 80-class configs train on unmodified."""
    from spanet_mm.datasets import make_coco_shapes

    return make_coco_shapes(
        str(tmp_path_factory.mktemp('coco')),
        num_train=COCO_NUM_TRAIN,
        num_val=COCO_NUM_VAL,
        image_size=E2E_IMAGE_SIZE,
        categories='coco',
    )


@pytest.fixture(scope='session')
def ade20k_like(tmp_path_factory):
    from spanet_mm.datasets import make_ade20k_like

    return make_ade20k_like(
        str(tmp_path_factory.mktemp('ade')), num_train=8, num_val=4, image_size=E2E_IMAGE_SIZE
    )


@pytest.fixture(scope='session')
def imagenet_like(tmp_path_factory):
    from spanet_mm.datasets import make_imagenet_like

    return make_imagenet_like(
        str(tmp_path_factory.mktemp('imagenet')),
        num_classes=4,
        train_per_class=4,
        val_per_class=2,
        image_size=E2E_IMAGE_SIZE,
    )


@pytest.fixture(scope='session')
def coco_options(coco_shapes):
    """Overrides of an MMDetection COCO config: data roots and image scale."""
    scale = (E2E_IMAGE_SIZE, E2E_IMAGE_SIZE)
    return coco_data_options(coco_shapes) + cfg_options(
        **{
            # The pipelines' Resize steps (train: Load, LoadAnnotations, Resize; test: Load,
            # Resize).
            'train_dataloader__dataset__pipeline__2__scale': scale,
            'val_dataloader__dataset__pipeline__1__scale': scale,
            'test_dataloader__dataset__pipeline__1__scale': scale,
        }
    )


@pytest.fixture(scope='session')
def ade20k_options(ade20k_like):
    """Overrides of an MMSegmentation ADE20K config: data roots, image scale, crop size."""
    root = ade20k_like['data_root']
    scale = (4 * E2E_IMAGE_SIZE, E2E_IMAGE_SIZE)  # ADE20K's (2048, 512), scaled down
    crop = (E2E_IMAGE_SIZE, E2E_IMAGE_SIZE)
    return cfg_options(
        **{
            'train_dataloader__dataset__data_root': root,
            'val_dataloader__dataset__data_root': root,
            'test_dataloader__dataset__data_root': root,
            'train_dataloader__dataset__pipeline__2__scale': scale,
            'train_dataloader__dataset__pipeline__3__crop_size': crop,
            'model__data_preprocessor__size': crop,
            'val_dataloader__dataset__pipeline__1__scale': scale,
            'test_dataloader__dataset__pipeline__1__scale': scale,
        }
    )


@pytest.fixture(scope='session')
def imagenet_options(imagenet_like):
    """Overrides of an MMPretrain ImageNet config: data roots and image scale."""
    root = imagenet_like['data_root']
    size = E2E_IMAGE_SIZE
    options = {
        'train_dataloader__dataset__data_root': root,
        'train_dataloader__dataset__pipeline__1__scale': size,
    }
    for loader in ('val_dataloader', 'test_dataloader'):
        options.update(
            {
                f'{loader}__dataset__data_root': root,
                f'{loader}__dataset__pipeline__1__scale': size * 9 // 8,
                f'{loader}__dataset__pipeline__2__crop_size': size,
            }
        )
    return cfg_options(**options)


@pytest.fixture
def tiny_v2_arch():
    """A copy of TINY_HYBRID_V2_ARCH (tests/helpers/options.py), free to change."""
    return copy.deepcopy(TINY_HYBRID_V2_ARCH)
