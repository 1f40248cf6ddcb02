"""The photographs of the tools (spanet_tools/images.py)."""

import os.path as osp

import numpy as np
import pytest
import torch

from spanet_tools.images import IMAGENET_MEAN, IMAGENET_STD, image_paths, to_model_input


def test_default_images_are_shipped_photographs():
    paths = image_paths()
    assert len(paths) >= 3 and all(osp.isfile(p) for p in paths)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        image_paths('no/such/folder')


def test_model_input_is_normalised_and_resized():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[..., 0] = 255
    x = to_model_input(image, size=20)
    assert x.shape == (1, 3, 20, 20)
    expected = [
        (255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
        -IMAGENET_MEAN[1] / IMAGENET_STD[1],
        -IMAGENET_MEAN[2] / IMAGENET_STD[2],
    ]
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor(expected))
    assert to_model_input(image, size=20, crop=False).shape == (1, 3, 20, 30)
    assert to_model_input(image, size=None).shape == (1, 3, 40, 60)
