"""Fixtures of the tools' tests."""

import pytest

from helpers.figures import write_photos


@pytest.fixture
def photo_dir(tmp_path):
    """A folder of two small generated photographs (``helpers.figures.write_photos``)."""
    folder = tmp_path / 'photos'
    write_photos(folder)
    return folder


@pytest.fixture
def photo_paths(photo_dir):
    """The paths of the photographs of ``photo_dir``."""
    return sorted(str(path) for path in photo_dir.glob('*.png'))
