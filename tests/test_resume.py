"""A training run killed after its first checkpoint resumes with ``tools/train.py --resume``
under torch's ``weights_only`` loading and finishes at the planned iteration, continuing the
killed run's iterations, optimizer state and loss history (not starting over)."""
import os
import signal
import subprocess

import pytest
import torch
from helpers.commands import REPO_ROOT, run_command, tool, train_scalars
from helpers.options import TINY_ARCH, arch_options, cfg_options

CONFIG = REPO_ROOT / 'configs/mmseg/fpn_spanet_s_ade20k_80k.py'
MAX_ITERS, INTERVAL = 12, 4


# A hook that kills its own process, as a crash or a pre-empted job would, right after the
# checkpoint hook (priority VERY_LOW) has saved iteration `iter`: deterministic, unlike
# killing the run from outside, which races a fast machine to the end of training.
CRASH_HOOK = """
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterIter(Hook):
    priority = 'LOWEST'

    def __init__(self, iter):
        self.iter = iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iter:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def crashing_config(tmp_path, kill_at):
    """CONFIG plus the crash hook, as a config written next to the hook module."""
    (tmp_path / 'crash_hook.py').write_text(CRASH_HOOK)
    config = tmp_path / 'crashing_config.py'
    config.write_text(
        f"_base_ = [{str(CONFIG)!r}]\n"
        "custom_imports = dict(imports=['spanet_mm', 'crash_hook'], "
        "allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='KillAfterIter', iter={kill_at})]\n")
    return config


@pytest.mark.slow
def test_killed_run_resumes_and_continues(ade20k_options, tmp_path):
    work_dir = tmp_path / 'work'
    # Logging every iteration, unsmoothed, records each iteration's loss. No pretrained file.
    options = ade20k_options + arch_options() + cfg_options(
        model__backbone__init_cfg=None,
        train_cfg__max_iters=MAX_ITERS, train_cfg__val_interval=MAX_ITERS,
        default_hooks__checkpoint__interval=INTERVAL, default_hooks__logger__interval=1,
        log_processor__window_size=1,
        train_dataloader__batch_size=2, model__neck__in_channels=TINY_ARCH['embed_dims'])
    cmd = ['python', str(tool('train.py')), str(CONFIG), '--work-dir', str(work_dir),
           '--cfg-options', *options]
    crashing = list(cmd)
    crashing[2] = str(crashing_config(tmp_path, kill_at=INTERVAL))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(crashing, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, f'the run was not killed (rc {proc.returncode})'
    killed = train_scalars(work_dir)
    first = work_dir / f'iter_{INTERVAL}.pth'
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists()

    log = run_command(cmd + ['--resume', str(first)])
    assert f'resumed epoch: 0, iter: {INTERVAL}' in log
    resumed = [r for r in train_scalars(work_dir) if r not in killed]
    # The resumed run logs iterations INTERVAL + 1 .. MAX_ITERS, not 1 .. MAX_ITERS.
    assert [r['iter'] for r in resumed] == list(range(INTERVAL + 1, MAX_ITERS + 1))

    final = torch.load(work_dir / f'iter_{MAX_ITERS}.pth', map_location='cpu')
    assert final['meta']['iter'] == MAX_ITERS
    # AdamW counted every step of both runs: its state was restored, not rebuilt.
    steps = {float(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {float(MAX_ITERS)}
    # The loss history goes on from the killed run's: its first INTERVAL values are those
    # the killed run logged, followed by the resumed run's.
    history = final['message_hub']['log_scalars']['train/loss'].data[0]
    logged = {r['iter']: r['loss'] for r in killed + resumed}
    assert len(history) == MAX_ITERS
    assert history.tolist() == pytest.approx([logged[i] for i in range(1, MAX_ITERS + 1)])


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
    torch.save({'meta': {'iter': 2, 'seed': np.float64(1.0)},
                'state_dict': {'w': torch.ones(2)},
                'message_hub': hub.state_dict()}, path)


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
    for owner, name in ((HistoryBuffer, '__init__'), (HistoryBuffer, '_set_default_statistics'),
                        (HistoryBuffer, 'max_length'), (torch, 'load'), (dict, 'get')):
        with pytest.raises(pickle.UnpicklingError, match='only for public methods'):
            history_buffer_method(owner, name)
