"""A training run killed after a checkpoint resumes with ``tools/train.py --resume`` and
finishes at the planned iteration, continuing the killed run's iterations, optimizer state and
loss history (not starting over). A checkpoint cut short is skipped by ``--resume`` without a
value (resuming from the one before) and refused, with its reason, by ``--resume PATH``.
"""

import logging
import os
import signal
import subprocess
import zipfile

import pytest
import torch
from mmengine.config import Config

from spanet_mm.engine import cli
from spanet_mm.engine.checkpoint_files import TRUNCATED

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
        f'_base_ = [{str(CONFIG)!r}]\n'
        "custom_imports = dict(imports=['spanet_mm', 'crash_hook'], "
        'allow_failed_imports=False)\n'
        f"custom_hooks = [dict(type='KillAfterIter', iter={kill_at})]\n"
    )
    return config


@pytest.mark.slow
def test_killed_run_resumes_and_continues(ade20k_options, tmp_path):
    work_dir = tmp_path / 'work'
    # Logging every iteration, unsmoothed, records each iteration's loss. No pretrained file.
    options = (
        ade20k_options
        + arch_options()
        + cfg_options(
            model__backbone__init_cfg=None,
            train_cfg__max_iters=MAX_ITERS,
            train_cfg__val_interval=MAX_ITERS,
            default_hooks__checkpoint__interval=INTERVAL,
            default_hooks__logger__interval=1,
            log_processor__window_size=1,
            train_dataloader__batch_size=2,
            model__neck__in_channels=TINY_ARCH['embed_dims'],
        )
    )
    cmd = [
        'python',
        str(tool('train.py')),
        str(CONFIG),
        '--work-dir',
        str(work_dir),
        '--cfg-options',
        *options,
    ]
    crashing = list(cmd)
    crashing[2] = str(crashing_config(tmp_path, kill_at=INTERVAL))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])
    )
    proc = subprocess.run(
        crashing,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        timeout=900,
    )
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


# --resume and a checkpoint cut short: what tools/train.py makes of the flag.


def save_tiny(path, step):
    torch.save({'meta': {'iter': step}, 'state_dict': {'w': torch.zeros(8)}}, path)
    return path


def cut_in_half(path):
    with open(path, 'r+b') as f:
        f.truncate(path.stat().st_size // 2)
    return path


def apply_resume(work_dir, *resume):
    """``apply_train_args`` for ``--resume [PATH]`` on a config whose work dir is given."""
    args = cli.train_parser().parse_args(['config.py', '--resume', *resume])
    cfg = Config(
        dict(
            work_dir=str(work_dir),
            load_from='pretrained.pth',
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2)),
        )
    )
    return cli.apply_train_args(cfg, args)


@pytest.fixture
def warnings_logged(monkeypatch):
    logged = []

    def record(message, logger=None, level=logging.INFO):
        if level == logging.WARNING:
            logged.append(message)

    monkeypatch.setattr(cli, 'print_log', record)
    return logged


@pytest.fixture
def cut_run(tmp_path):
    """A work dir whose last checkpoint, iter_4.pth, was cut short after iter_2.pth."""
    save_tiny(tmp_path / 'iter_2.pth', 2)
    latest = cut_in_half(save_tiny(tmp_path / 'iter_4.pth', 4))
    (tmp_path / 'last_checkpoint').write_text(str(latest))
    return tmp_path


def test_resume_skips_a_cut_checkpoint_with_a_warning(cut_run, warnings_logged):
    cfg = apply_resume(cut_run)
    assert (cfg.resume, cfg.load_from) == (True, str(cut_run / 'iter_2.pth'))
    assert warnings_logged == [
        f'resume: skipping {cut_run / "iter_4.pth"}: {TRUNCATED}; '
        f'resuming from {cut_run / "iter_2.pth"}'
    ]


def test_resume_trains_from_scratch_without_a_complete_checkpoint(cut_run, warnings_logged):
    (cut_run / 'iter_2.pth').unlink()
    cfg = apply_resume(cut_run)
    assert (cfg.resume, cfg.load_from) == (False, None)
    assert warnings_logged[0].endswith(
        f'no complete checkpoint in {cut_run}; training from scratch'
    )


def test_resume_leaves_sound_work_dirs_to_mmengine(tmp_path, warnings_logged):
    # Nothing saved yet, then a complete last checkpoint: MMEngine reads last_checkpoint.
    assert (apply_resume(tmp_path).resume, apply_resume(tmp_path).load_from) == (True, None)
    (tmp_path / 'last_checkpoint').write_text(str(save_tiny(tmp_path / 'iter_2.pth', 2)))
    cfg = apply_resume(tmp_path)
    assert (cfg.resume, cfg.load_from) == (True, None)
    assert warnings_logged == []


def test_resume_path_refuses_a_cut_checkpoint(cut_run):
    latest = cut_run / 'iter_4.pth'
    with pytest.raises(ValueError, match='truncated') as error:
        apply_resume(cut_run, str(latest))
    assert str(error.value).startswith(f'--resume {latest}: {TRUNCATED}.')
    empty = cut_run / 'iter_6.pth'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match=r'empty \(0 bytes'):
        apply_resume(cut_run, str(empty))


def test_resume_path_to_a_complete_or_absent_file_is_unchanged(cut_run):
    for path in (cut_run / 'iter_2.pth', cut_run / 'absent.pth'):
        cfg = apply_resume(cut_run, str(path))
        assert (cfg.resume, cfg.load_from) == (True, str(path))


def test_training_checkpoints_are_written_atomically(tmp_path):
    cfg = apply_resume(tmp_path, str(tmp_path / 'absent.pth'))
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='local_atomic')


@pytest.mark.slow
def test_resume_skips_a_checkpoint_cut_short(ade20k_options, tmp_path):
    """Train 4 iterations with checkpoints at 2 and 4, cut iter_4.pth in half (a save
    interrupted midway), then ``--resume``: it resumes from iter_2.pth, saying why, and
    finishes with a complete iter_4.pth."""
    max_iters, interval = 4, 2
    work_dir = tmp_path / 'work'
    options = (
        ade20k_options
        + arch_options()
        + cfg_options(
            model__backbone__init_cfg=None,
            train_cfg__max_iters=max_iters,
            default_hooks__checkpoint__interval=interval,
            train_dataloader__batch_size=2,
            model__neck__in_channels=TINY_ARCH['embed_dims'],
        )
    )
    cmd = ['python', tool('train.py'), CONFIG, '--work-dir', work_dir, '--no-validate']
    cmd += ['--cfg-options', *options]
    run_command(cmd)
    latest, previous = work_dir / 'iter_4.pth', work_dir / 'iter_2.pth'
    assert (work_dir / 'last_checkpoint').read_text() == str(latest)
    # The run saved through the atomic backend, and no temporary file is left.
    assert "backend='local_atomic'" in (work_dir / f'{CONFIG.stem}.py').read_text()
    assert not [p for p in work_dir.iterdir() if p.suffix == '.tmp']
    cut_in_half(latest)

    log = run_command(cmd + ['--resume'])
    assert (
        f'resume: skipping {latest}: truncated (it ends before its zip directory; '
        f'an interrupted save?); resuming from {previous}'
    ) in log
    assert f'resumed epoch: 0, iter: {interval}' in log
    assert zipfile.is_zipfile(latest)
    final = torch.load(latest, map_location='cpu')
    assert final['meta']['iter'] == max_iters
