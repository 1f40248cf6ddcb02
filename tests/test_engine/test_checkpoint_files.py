"""spanet_mm.engine.checkpoint_files: atomic checkpoint writes (a failed write leaves nothing
behind and keeps the previous file), the hook configuration that selects them, and which
checkpoint ``--resume`` without a value picks when some are cut short."""

import builtins
import os
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import get_file_backend
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import save_checkpoint

from spanet_mm.engine import checkpoint_files
from spanet_mm.engine.checkpoint_files import (
    EMPTY,
    MISSING,
    NOT_A_CHECKPOINT,
    TRUNCATED,
    AtomicLocalBackend,
    ResumeChoice,
    checkpoint_problem,
    describe_resume,
    find_resume_checkpoint,
    use_atomic_checkpoints,
    write_atomically,
)

ATOMIC = dict(backend='local_atomic')


def write_checkpoint(path, step=0):
    """A small complete checkpoint in torch's zip format."""
    torch.save({'meta': {'iter': step}, 'state_dict': {'w': torch.arange(64.0)}}, path)
    return path


def cut(path, keep=0.5):
    """Cut a file to ``keep`` of its size, as a save killed midway leaves it."""
    size = path.stat().st_size
    with open(path, 'r+b') as f:
        f.truncate(int(size * keep))
    return path


def record_last(work_dir, path):
    """``work_dir/last_checkpoint`` naming ``path``, as CheckpointHook writes it."""
    (work_dir / 'last_checkpoint').write_text(str(path))


# Writing.


class FailingFile:
    """A file whose ``write`` writes half of what it is given, then fails (a full disk)."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise OSError(28, 'No space left on device')

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def fail_halfway_through_write(monkeypatch):
    def failing_open(*args, **kwargs):
        return FailingFile(builtins.open(*args, **kwargs))

    # The module's own global `open` shadows the builtin for its code only.
    monkeypatch.setattr(checkpoint_files, 'open', failing_open, raising=False)


def fail_at(name):
    def patch(monkeypatch):
        def failing(*args):
            raise OSError(5, f'{name} failed')

        monkeypatch.setattr(os, name, failing)

    return patch


@pytest.mark.parametrize(
    'failure',
    [fail_halfway_through_write, fail_at('fsync'), fail_at('replace')],
    ids=['write', 'fsync', 'replace'],
)
@pytest.mark.parametrize('previous', [None, b'the previous complete checkpoint'])
def test_a_failed_write_leaves_no_partial_file_and_keeps_the_previous(
    tmp_path, monkeypatch, failure, previous
):
    target = tmp_path / 'iter_4.pth'
    if previous is not None:
        target.write_bytes(previous)
    failure(monkeypatch)
    with pytest.raises(OSError):
        write_atomically(target, b'x' * 1000)
    monkeypatch.undo()
    if previous is None:
        assert os.listdir(tmp_path) == []
    else:
        assert os.listdir(tmp_path) == ['iter_4.pth']
        assert target.read_bytes() == previous


def test_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'new_dir' / 'iter_2.pth'
    write_atomically(target, b'old')
    write_atomically(target, b'new content')
    assert target.read_bytes() == b'new content'
    assert os.listdir(target.parent) == ['iter_2.pth']


def test_temporary_file_sits_beside_the_target_under_a_hidden_name(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', spy)
    write_atomically(tmp_path / 'iter_2.pth', b'data')
    [(src, dst)] = seen
    assert os.path.dirname(src) == str(tmp_path)
    assert checkpoint_files.TEMP_NAME.fullmatch(os.path.basename(src))
    assert dst == tmp_path / 'iter_2.pth'


def test_the_backend_is_registered_and_writes_atomically(tmp_path, monkeypatch):
    backend = get_file_backend(str(tmp_path), backend_args=ATOMIC)
    assert isinstance(backend, AtomicLocalBackend)
    written = []
    real_write = checkpoint_files.write_atomically

    def spy(path, data):
        written.append(os.path.basename(path))
        real_write(path, data)

    monkeypatch.setattr(checkpoint_files, 'write_atomically', spy)
    backend.put(b'\x00\x01', tmp_path / 'a.bin')
    backend.put_text('ünïcode', tmp_path / 'last_checkpoint', encoding='utf-8')
    assert written == ['a.bin', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text(encoding='utf-8') == 'ünïcode'
    # Reading and removing stay LocalBackend's.
    assert backend.get(tmp_path / 'a.bin') == b'\x00\x01'
    backend.remove(tmp_path / 'a.bin')
    assert not (tmp_path / 'a.bin').exists()


class Unpicklable:
    """Stands in for a checkpoint entry whose serialisation fails."""

    def __reduce__(self):
        raise pickle.PicklingError('cannot pickle this')


def test_mmengine_save_checkpoint_through_the_backend(tmp_path):
    target = tmp_path / 'iter_2.pth'
    save_checkpoint({'meta': {'iter': 2}}, str(target), backend_args=ATOMIC)
    assert torch.load(target)['meta'] == {'iter': 2}
    with pytest.raises(pickle.PicklingError):
        save_checkpoint({'meta': {'iter': 3}, 'x': Unpicklable()}, str(target), backend_args=ATOMIC)
    assert torch.load(target)['meta'] == {'iter': 2}
    assert os.listdir(tmp_path) == ['iter_2.pth']


# Selecting the backend in configs.


def training_config(tmp_path, **checkpoint):
    hook = dict(dict(type='CheckpointHook', interval=2), **checkpoint)
    return Config(dict(work_dir=str(tmp_path), default_hooks=dict(checkpoint=hook)))


def test_checkpoint_hook_gets_the_atomic_backend(tmp_path):
    cfg = training_config(tmp_path)
    assert use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == ATOMIC


@pytest.mark.parametrize(
    'checkpoint',
    [
        dict(backend_args=dict(backend='petrel')),
        dict(file_client_args=dict(backend='disk')),
        dict(out_dir='s3://bucket/checkpoints'),
        dict(type='LoggerHook'),
        dict(type='NoSuchHook'),
    ],
    ids=['own-backend-args', 'file-client-args', 'remote-out-dir', 'other-hook', 'unknown-type'],
)
def test_configs_that_choose_their_own_storage_are_left_alone(tmp_path, checkpoint):
    cfg = training_config(tmp_path, **checkpoint)
    before = cfg.default_hooks.checkpoint.to_dict()
    assert not use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.to_dict() == before


def test_remote_work_dir_and_no_checkpoint_hook_are_left_alone(tmp_path):
    remote = training_config(tmp_path)
    remote.work_dir = 's3://bucket/work'
    assert not use_atomic_checkpoints(remote)
    assert not use_atomic_checkpoints(Config(dict(work_dir=str(tmp_path))))
    assert not use_atomic_checkpoints(Config(dict(default_hooks=dict(checkpoint=None))))


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.sum()) if mode == 'loss' else out


def test_runner_checkpoints_go_through_the_atomic_backend(tmp_path, monkeypatch):
    cfg = training_config(tmp_path, by_epoch=False)
    use_atomic_checkpoints(cfg)
    written = []
    real_write = checkpoint_files.write_atomically

    def spy(path, data):
        written.append(os.path.basename(path))
        real_write(path, data)

    monkeypatch.setattr(checkpoint_files, 'write_atomically', spy)
    runner = Runner(
        model=ToyModel(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.rand(2)) for _ in range(4)],
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2,
        ),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=4),
        default_hooks=cfg.default_hooks.to_dict(),
        experiment_name='atomic_checkpoints',
    )
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'CheckpointHook')
    assert isinstance(hook.file_backend, AtomicLocalBackend)
    assert written == ['iter_2.pth', 'iter_4.pth']
    assert checkpoint_problem(tmp_path / 'iter_4.pth') is None
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_4.pth')


# Telling complete checkpoints from cut ones.


def test_checkpoint_problem_tells_complete_from_cut(tmp_path):
    complete = write_checkpoint(tmp_path / 'complete.pth')
    assert checkpoint_problem(complete) is None
    assert checkpoint_problem(cut(write_checkpoint(tmp_path / 'half.pth'))) == TRUNCATED
    for size in (1, 3, 4, 100):
        short = tmp_path / f'first_{size}.pth'
        short.write_bytes(complete.read_bytes()[:size])
        assert checkpoint_problem(short) == TRUNCATED, size
    # Only the end is lost: everything but the last byte is still not a zip archive.
    assert checkpoint_problem(cut(write_checkpoint(tmp_path / 'b.pth'), keep=0.999)) == TRUNCATED
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert checkpoint_problem(tmp_path / 'empty.pth') == EMPTY
    assert checkpoint_problem(tmp_path / 'absent.pth') == MISSING
    (tmp_path / 'text.pth').write_text('hello')
    assert checkpoint_problem(tmp_path / 'text.pth') == NOT_A_CHECKPOINT


def test_old_format_and_directories_are_not_judged(tmp_path):
    old = tmp_path / 'old.pth'
    torch.save({'w': torch.zeros(2)}, old, _use_new_zipfile_serialization=False)
    assert checkpoint_problem(old) is None
    assert checkpoint_problem(tmp_path) is None


# Resolving `--resume` without a value.


def test_nothing_to_resume_in_a_fresh_work_dir(tmp_path):
    assert find_resume_checkpoint(tmp_path / 'absent') == ResumeChoice(None, [], [])
    assert find_resume_checkpoint(tmp_path) == ResumeChoice(None, [], [])
    assert describe_resume(ResumeChoice(None, [], []), tmp_path) == []


def test_a_complete_last_checkpoint_is_left_to_mmengine(tmp_path):
    write_checkpoint(tmp_path / 'iter_2.pth')
    latest = write_checkpoint(tmp_path / 'iter_4.pth')
    record_last(tmp_path, latest)
    assert find_resume_checkpoint(tmp_path) == ResumeChoice(str(latest), [], [])


def test_a_cut_last_checkpoint_falls_back_to_the_one_before(tmp_path):
    previous = write_checkpoint(tmp_path / 'iter_2.pth')
    latest = cut(write_checkpoint(tmp_path / 'iter_4.pth'))
    record_last(tmp_path, latest)
    choice = find_resume_checkpoint(tmp_path)
    assert choice == ResumeChoice(str(previous), [(str(latest), TRUNCATED)], [])
    assert describe_resume(choice, tmp_path) == [
        f'resume: skipping {latest}: truncated (it ends before its zip directory; an '
        f'interrupted save?); resuming from {previous}'
    ]


@pytest.mark.parametrize('problem', ['empty', 'missing'])
def test_an_empty_or_missing_last_checkpoint_target_is_skipped(tmp_path, problem):
    previous = write_checkpoint(tmp_path / 'iter_2.pth')
    latest = tmp_path / 'iter_4.pth'
    if problem == 'empty':
        latest.write_bytes(b'')
    record_last(tmp_path, latest)
    choice = find_resume_checkpoint(tmp_path)
    reason = EMPTY if problem == 'empty' else MISSING
    assert choice == ResumeChoice(str(previous), [(str(latest), reason)], [])
    assert describe_resume(choice, tmp_path) == [
        f'resume: skipping {latest}: {reason}; resuming from {previous}'
    ]


def test_several_cut_checkpoints_are_skipped_newest_first(tmp_path):
    oldest = write_checkpoint(tmp_path / 'iter_2.pth')
    empty = tmp_path / 'iter_4.pth'
    empty.write_bytes(b'')
    latest = cut(write_checkpoint(tmp_path / 'iter_6.pth'))
    record_last(tmp_path, latest)
    choice = find_resume_checkpoint(tmp_path)
    assert choice.checkpoint == str(oldest)
    assert choice.skipped == [(str(latest), TRUNCATED), (str(empty), EMPTY)]


def test_checkpoints_newer_than_the_recorded_one_are_from_another_run(tmp_path):
    previous = write_checkpoint(tmp_path / 'iter_2.pth')
    write_checkpoint(tmp_path / 'iter_80.pth')  # left by an earlier run in the work dir
    latest = cut(write_checkpoint(tmp_path / 'iter_4.pth'))
    record_last(tmp_path, latest)
    assert find_resume_checkpoint(tmp_path).checkpoint == str(previous)


def test_steps_order_numerically_not_by_name(tmp_path):
    write_checkpoint(tmp_path / 'iter_9.pth')
    newest = write_checkpoint(tmp_path / 'iter_10.pth')
    assert find_resume_checkpoint(tmp_path).checkpoint == str(newest)


@pytest.mark.parametrize('record', ['missing', 'empty'])
def test_without_a_usable_last_checkpoint_the_newest_complete_file_is_used(tmp_path, record):
    write_checkpoint(tmp_path / 'epoch_1.pth')
    newest = write_checkpoint(tmp_path / 'epoch_2.pth')
    last = tmp_path / 'last_checkpoint'
    if record == 'empty':
        last.write_text('')
    choice = find_resume_checkpoint(tmp_path)
    reason = EMPTY if record == 'empty' else MISSING
    assert choice == ResumeChoice(str(newest), [(str(last), reason)], [])
    assert describe_resume(choice, tmp_path) == [
        f'resume: skipping {last}: {reason}; resuming from {newest}'
    ]


def test_no_complete_checkpoint_means_training_from_scratch(tmp_path):
    only = cut(write_checkpoint(tmp_path / 'iter_2.pth'))
    record_last(tmp_path, only)
    choice = find_resume_checkpoint(tmp_path)
    assert choice == ResumeChoice(None, [(str(only), TRUNCATED)], [])
    assert describe_resume(choice, tmp_path) == [
        f'resume: skipping {only}: {TRUNCATED}; no complete checkpoint in {tmp_path}; '
        'training from scratch'
    ]


def test_an_empty_last_checkpoint_alone_means_training_from_scratch(tmp_path):
    (tmp_path / 'last_checkpoint').write_text('')
    choice = find_resume_checkpoint(tmp_path)
    assert choice == ResumeChoice(None, [(str(tmp_path / 'last_checkpoint'), EMPTY)], [])


def test_checkpoints_in_the_recorded_directory_are_candidates(tmp_path):
    out_dir = tmp_path / 'elsewhere'
    out_dir.mkdir()
    previous = write_checkpoint(out_dir / 'iter_2.pth')
    latest = cut(write_checkpoint(out_dir / 'iter_4.pth'))
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    record_last(work_dir, latest)
    assert find_resume_checkpoint(work_dir).checkpoint == str(previous)


def test_leftovers_of_interrupted_saves_are_reported(tmp_path):
    latest = write_checkpoint(tmp_path / 'iter_2.pth')
    record_last(tmp_path, latest)
    leftover = tmp_path / '.iter_4.pth.0123abcd.tmp'
    leftover.write_bytes(b'PK\x03\x04partial')
    (tmp_path / 'notes.tmp').write_text('not ours')
    choice = find_resume_checkpoint(tmp_path)
    assert choice == ResumeChoice(str(latest), [], [str(leftover)])
    assert describe_resume(choice, tmp_path) == [
        f'resume: interrupted saves left {leftover}; nothing reads them, they can be deleted'
    ]
