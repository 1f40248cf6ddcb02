"""Checkpoint files that are never seen half-written, and ``--resume`` that skips those that
were anyway.

Writing. MMEngine's CheckpointHook hands every checkpoint (the periodic ones and the best
ones) to ``mmengine.runner.checkpoint.save_checkpoint``, which serialises it in memory and
calls ``put`` of the file backend that the hook's ``backend_args`` name. The backend is
therefore the one place where MMEngine lets a project decide how the bytes reach the disk:
:class:`AtomicLocalBackend` is MMEngine's ``LocalBackend`` whose ``put`` and ``put_text`` go
through :func:`write_atomically` (a temporary file in the same directory, flushed, fsync'ed,
then ``os.replace``'d onto the final name). It is registered as ``'local_atomic'`` beside
MMEngine's own backends, not in place of ``'local'``, so nothing else that reads or writes
local files changes; :func:`use_atomic_checkpoints` points a config's checkpoint hook at it
(``tools/train.py`` does that), and the hook also uses it to remove old checkpoints
(inherited unchanged). This needs no patching of MMEngine: ``backend_args`` is the hook's
documented option.

What stays as MMEngine writes it:

* ``work_dir/last_checkpoint``, which the hook writes with a plain ``open`` after the
  checkpoint itself. Making that atomic too would mean copying the hook's private
  ``_save_checkpoint_with_step`` into a subclass or patching ``open``; instead its
  content is treated as a hint: it is written only after the checkpoint it names is
  complete, and :func:`find_resume_checkpoint` checks what it names (and copes with it
  being empty, cut or missing) rather than trusting it.
* The order of the hook's steps: with ``max_keep_ckpts`` it removes the oldest checkpoint
  before saving the next, so a run killed during that save resumes from the one before.
* Published checkpoints (``published_keys``), which the hook saves without its
  ``backend_args``.

A save killed midway leaves only its temporary file, ``.NAME.<8 hex digits>.tmp``, which
matches no checkpoint name; :func:`find_resume_checkpoint` reports such files so they can be
deleted.

Resuming. A checkpoint that lost its end (cut by a kill, a full disk or a copy, or written
by a tool without this backend) is detected cheaply: torch saves zip archives, whose
directory is at the end of the file, so :func:`zipfile.is_zipfile` (which looks only for
that end record) is False for it. :func:`find_resume_checkpoint` resolves ``--resume``
without a value to the newest complete checkpoint: the one ``last_checkpoint`` names, or
else the newest ``iter_N.pth``/``epoch_N.pth`` before it, and says what it skipped and why.
"""

import os
import os.path as osp
import re
import secrets
import zipfile
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple, Union

from mmengine.config import Config
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

PathLike = Union[str, Path]

ATOMIC_BACKEND = 'local_atomic'
LAST_CHECKPOINT = 'last_checkpoint'
# The names CheckpointHook gives periodic checkpoints with its default filename_tmpl.
CHECKPOINT_NAME = re.compile(r'(?:epoch|iter)_(\d+)\.pth')
# ``.NAME.<token>.tmp``: hidden, and ending in neither ``.pth`` nor the final name, so that
# neither MMEngine nor a glob for checkpoints ever picks a temporary file.
TEMP_NAME = re.compile(r'\..+\.[0-9a-f]{8}\.tmp')
ZIP_MAGIC = b'PK\x03\x04'
# torch.save's format before zip archives (torch < 1.6) is a bare pickle (protocol 2+),
# whose completeness cannot be told without reading it all.
PICKLE_MAGIC = b'\x80'

TRUNCATED = 'truncated (it ends before its zip directory; an interrupted save?)'
EMPTY = 'empty (0 bytes; an interrupted save?)'
MISSING = 'missing (no such file)'
NOT_A_CHECKPOINT = 'not a PyTorch checkpoint (neither a zip archive nor a pickle)'


def write_atomically(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` never names a partial file.

    The bytes go to a new temporary file in the same directory (so that the rename stays
    on one file system), which is flushed and fsync'ed before ``os.replace`` puts it under
    the final name in one step. A reader sees the previous file or the new one, whole. If
    anything fails, the temporary file is removed and a previous file stays as it was.

    Args:
        path: The final file; its directory is created if needed.
        data: The file's complete content.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temp = osp.join(directory, f'.{osp.basename(path)}.{secrets.token_hex(4)}.tmp')
    try:
        # 'x' mode (not mkstemp) so that the file gets the permissions a plain open gives.
        with open(temp, 'xb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if osp.exists(temp):
            os.remove(temp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; elsewhere a directory cannot be
    opened for that)."""
    if os.name != 'posix':
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        # Some (network) file systems refuse fsync on directories; the file is complete
        # under its final name already, only the rename's durability is left to them.
        pass
    finally:
        os.close(fd)


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend whose writes are atomic (:func:`write_atomically`);
    registered as ``'local_atomic'``."""

    def put(self, obj: bytes, filepath: PathLike) -> None:
        """Write bytes to ``filepath`` atomically.

        Args:
            obj: The bytes.
            filepath: The file; its directory is created if needed.
        """
        write_atomically(filepath, obj)

    def put_text(self, obj: str, filepath: PathLike, encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically.

        Args:
            obj: The text.
            filepath: The file; its directory is created if needed.
            encoding: The text's encoding in the file.
        """
        write_atomically(filepath, obj.encode(encoding))


# force: the name is this module's own, so importing it again (a reload) re-registers it.
register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def use_atomic_checkpoints(cfg: Config) -> bool:
    """Make the config's checkpoint hook write through :class:`AtomicLocalBackend`.

    Only where that changes nothing else: the hook is a CheckpointHook (or a subclass),
    sets neither ``backend_args`` nor ``file_client_args`` of its own, and saves to the
    local disk (its ``out_dir``, else the work dir, has no ``scheme://`` prefix).

    Args:
        cfg: A training config, changed in place.

    Returns:
        Whether the hook now uses the atomic backend.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or not _is_checkpoint_hook(hook.get('type')):
        return False
    if hook.get('backend_args') is not None or hook.get('file_client_args') is not None:
        return False
    # The rule by which MMEngine's get_file_backend picks a backend from a path.
    if '://' in str(hook.get('out_dir') or cfg.get('work_dir') or ''):
        return False
    hook.backend_args = dict(backend=ATOMIC_BACKEND)
    return True


def _is_checkpoint_hook(hook_type: object) -> bool:
    """Whether a hook config's ``type`` (a registered name or a class) is a
    CheckpointHook, whose constructor takes ``backend_args``."""
    if isinstance(hook_type, str):
        hook_type = HOOKS.get(hook_type)
    return isinstance(hook_type, type) and issubclass(hook_type, CheckpointHook)


def checkpoint_problem(path: PathLike) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint file, judged from its first bytes and its
    end only; None if it is complete (or a directory, or in torch's old pickle format,
    which cannot be judged that cheaply).

    Args:
        path: A local checkpoint file.

    Returns:
        A reason fit for a message (e.g. ``'truncated (...)'``), or None.
    """
    if osp.isdir(path):
        return None
    if not osp.isfile(path):
        return MISSING
    if osp.getsize(path) == 0:
        return EMPTY
    if zipfile.is_zipfile(path):
        return None
    with open(path, 'rb') as f:
        head = f.read(len(ZIP_MAGIC))
    if head.startswith(PICKLE_MAGIC):
        return None
    # A file cut within its first bytes still starts like a zip archive.
    if ZIP_MAGIC.startswith(head) or head.startswith(ZIP_MAGIC):
        return TRUNCATED
    return NOT_A_CHECKPOINT


class ResumeChoice(NamedTuple):
    """What ``--resume`` without a value resumes from.

    Attributes:
        checkpoint: The newest complete checkpoint, or None if there is none.
        skipped: ``(path, reason)`` of each newer file that was passed over, newest first:
            ``last_checkpoint`` itself if it is missing or empty, then checkpoints that are
            missing or incomplete. Empty when ``last_checkpoint`` names a complete file or
            the work dir has no checkpoint at all, the cases MMEngine handles itself.
        leftovers: Temporary files of saves that were killed, safe to delete.
    """

    checkpoint: Optional[str]
    skipped: List[Tuple[str, str]]
    leftovers: List[str]


def find_resume_checkpoint(work_dir: PathLike) -> ResumeChoice:
    """The newest complete checkpoint of the run in ``work_dir``.

    That is the file ``work_dir/last_checkpoint`` names if it is complete; otherwise the
    newest complete ``iter_N.pth``/``epoch_N.pth`` (by N, then by modification time) in the
    work dir and in the named file's directory, older than the named file where that has a
    number (a higher one would be left from an earlier run in the same work dir).

    Args:
        work_dir: The run's work dir.

    Returns:
        The checkpoint, the files passed over and why, and leftover temporary files.
    """
    work_dir = str(work_dir)
    record = osp.join(work_dir, LAST_CHECKPOINT)
    named = _read_last_checkpoint(record)
    directories = [work_dir] + ([osp.dirname(named)] if named and osp.dirname(named) else [])
    leftovers = _leftover_temp_files(directories)
    problem = checkpoint_problem(named) if named else None
    if named and problem is None:
        return ResumeChoice(named, [], leftovers)
    skipped = [(named, problem)] if named else [(record, EMPTY if named == '' else MISSING)]
    below = _step_of(named)
    for candidate in _checkpoints_newest_first(directories, exclude=named):
        if below is not None and _step_of(candidate) >= below:
            continue
        problem = checkpoint_problem(candidate)
        if problem is None:
            return ResumeChoice(candidate, skipped, leftovers)
        skipped.append((candidate, problem))
    if named is None and len(skipped) == 1:
        # No last_checkpoint and no checkpoint: a fresh work dir, nothing was skipped.
        return ResumeChoice(None, [], leftovers)
    return ResumeChoice(None, skipped, leftovers)


def _read_last_checkpoint(record: str) -> Optional[str]:
    """The path ``last_checkpoint`` holds: None if there is no such file, ``''`` if it is
    empty (cut while it was written)."""
    if not osp.isfile(record):
        return None
    with open(record, encoding='utf-8', errors='replace') as f:
        return f.read().strip()


def _step_of(path: Optional[str]) -> Optional[int]:
    """N of ``iter_N.pth``/``epoch_N.pth``, None for other names."""
    match = CHECKPOINT_NAME.fullmatch(osp.basename(path or ''))
    return int(match.group(1)) if match else None


def _checkpoints_newest_first(directories: List[str], exclude: Optional[str]) -> List[str]:
    """The periodic checkpoints in ``directories``, newest (highest N, then latest
    modification) first, without ``exclude``."""
    found = {
        osp.join(directory, name)
        for directory in dict.fromkeys(directories)
        if osp.isdir(directory)
        for name in os.listdir(directory)
        if CHECKPOINT_NAME.fullmatch(name)
    }
    if exclude:
        found.discard(exclude)
    return sorted(found, key=lambda p: (_step_of(p), osp.getmtime(p)), reverse=True)


def _leftover_temp_files(directories: List[str]) -> List[str]:
    """Temporary files that :func:`write_atomically` left when its process was killed."""
    return sorted(
        {
            osp.join(directory, name)
            for directory in dict.fromkeys(directories)
            if osp.isdir(directory)
            for name in os.listdir(directory)
            if TEMP_NAME.fullmatch(name)
        }
    )


def describe_resume(choice: ResumeChoice, work_dir: PathLike) -> List[str]:
    """The warnings for a :class:`ResumeChoice`: one naming what was skipped and why, and
    what is resumed from instead; one for leftover temporary files.

    Args:
        choice: The result of :func:`find_resume_checkpoint`.
        work_dir: The work dir it was found in.

    Returns:
        The messages, none when there is nothing to warn about.
    """
    messages = []
    if choice.skipped:
        parts = [f'skipping {path}: {reason}' for path, reason in choice.skipped]
        if choice.checkpoint is not None:
            parts.append(f'resuming from {choice.checkpoint}')
        else:
            parts.append(f'no complete checkpoint in {work_dir}; training from scratch')
        messages.append('resume: ' + '; '.join(parts))
    if choice.leftovers:
        messages.append(
            'resume: interrupted saves left '
            f'{", ".join(choice.leftovers)}; nothing reads them, they can be deleted'
        )
    return messages
