"""Fixtures of the model tests."""

import pytest

from spanet_mm.codebases import default_scope, register_codebase


@pytest.fixture
def mmpretrain_scope():
    """MMPretrain's modules registered and its scope the default, as while an MMPretrain
    config is built: SPANetV2's head builds its loss from that registry."""
    register_codebase('mmpretrain')
    with default_scope('mmpretrain'):
        yield
