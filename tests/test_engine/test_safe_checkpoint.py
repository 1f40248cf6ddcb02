"""Runner checkpoints load under torch's ``weights_only`` default once ``spanet_mm`` is imported
(spanet_mm/engine/safe_checkpoint.py), and nothing else is allowed.
"""

import pytest
import torch


def _runner_like_checkpoint(path):
    """What a Runner checkpoint pickles besides tensors: a message hub with HistoryBuffers
    (float64 values, int64 counts, their methods) and numpy scalars in runtime info."""
    import numpy as np
    from mmengine.logging import MessageHub

    hub = MessageHub(f'safe-load-{path.name}')
    for value in (1.5, 0.5):
        hub.update_scalar('train/loss', value)
    hub.update_info('best_score', np.float32(0.25))
    hub.update_info('count', np.int32(3))
    hub.update_info('seed', np.int64(7))
    torch.save(
        {
            'meta': {'iter': 2, 'seed': np.float64(1.0)},
            'state_dict': {'w': torch.ones(2)},
            'message_hub': hub.state_dict(),
        },
        path,
    )


def test_runner_checkpoint_loads_with_weights_only(tmp_path):
    import spanet_mm  # noqa: F401  registers the allow-list

    path = tmp_path / 'ckpt.pth'
    _runner_like_checkpoint(path)
    loaded = torch.load(path, map_location='cpu')  # weights_only=True is the default
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert buffer.mean() == 1.0 and buffer.current() == 0.5
    assert loaded['message_hub']['runtime_info']['best_score'] == 0.25


def test_other_pickled_objects_are_still_refused(tmp_path):
    import argparse
    import pickle

    import spanet_mm  # noqa: F401

    path = tmp_path / 'args.pth'
    torch.save({'args': argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(pickle.UnpicklingError, match='argparse.Namespace'):
        torch.load(path)


def test_getattr_stand_in_resolves_only_history_buffer_methods():
    import pickle

    from mmengine.logging import HistoryBuffer

    from spanet_mm.engine import history_buffer_method

    assert history_buffer_method(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for owner, name in (
        (HistoryBuffer, '__init__'),
        (HistoryBuffer, '_set_default_statistics'),
        (HistoryBuffer, 'max_length'),
        (torch, 'load'),
        (dict, 'get'),
    ):
        with pytest.raises(pickle.UnpicklingError, match='only for public methods'):
            history_buffer_method(owner, name)
