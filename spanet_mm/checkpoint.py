"""Reading checkpoint files, and fitting their tensors to a SPANet or SPANetV2 backbone.

:func:`load_pretrained` is what ``init_cfg=dict(type='Pretrained', checkpoint=...)`` runs for
both generations. The checkpoint may be a local path or any address MMEngine's
``CheckpointLoader`` reads (``https://...``, ``s3://...``, ...): files are read through
MMEngine, as everywhere in OpenMMLab. Nothing loads the wrong thing silently:

- a missing local file raises :class:`CheckpointError`, naming the path, where to get the
  weights and the opt-out (``init_cfg=None``);
- a file that is not a PyTorch checkpoint raises, with torch's reason; a checkpoint that
  pickles objects other than tensors (a timm training file's ``args``) raises with the
  one-line ``--trust`` conversion that reads it;
- tensors the backbone does not have by design (the ImageNet classifier, norms of stages that
  are not outputs, what a generation's ``from_release_layout`` leaves out) are dropped and
  reported; any other tensor the backbone lacks, any tensor of the backbone the file lacks and
  any shape mismatch raise, naming the groups of tensors, the arch the file looks like and the
  ``allow_partial=True`` option that accepts a partial load on purpose.

This module knows nothing of either generation: a backbone says how its authors' files are
laid out (``from_release_layout``), which arch a state_dict is (``arch_name_of``), which
generations exist (``generations()``) and where to get its weights (``weights_source``).
"""

import logging
import os
import os.path as osp
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import MMLogger, print_log
from mmengine.runner import CheckpointLoader
from torch import Tensor, nn

StateDict = Dict[str, Tensor]

CLASSIFIER_REASON = 'tensors of the ImageNet classifier (not part of a backbone)'
OPT_OUT = (
    "to train without pretrained weights on purpose, set the backbone's "
    'init_cfg=None (e.g. `--cfg-options model.backbone.init_cfg=None`)'
)
TRUST_HINT = (
    'If you trust its source, convert it once with `python '
    'tools/convert_release_checkpoint.py IN OUT --trust` and use OUT.'
)
_CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.tar', '.ckpt', '.bin')
# How many tensor names an error or INFO line spells out before summarising.
_EXAMPLES = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def is_url(source: str) -> bool:
    """Whether ``source`` names a scheme (``https://``, ``s3://``, ...) rather than a path."""
    return re.match(r'^[a-z][a-z0-9+.-]*://', source) is not None


# ---------------------------------------------------------------------------------------------
# Reading a file
# ---------------------------------------------------------------------------------------------


def read_checkpoint(source: str, trust: bool = False) -> dict:
    """Read a checkpoint: a local file, or any address MMEngine's ``CheckpointLoader`` knows.

    Args:
        source (str): A path or an address (``https://...``, ``s3://...``).
        trust (bool): Allow arbitrary pickled objects (local files only; only for files from
            a trusted source, since unpickling can run code). Defaults to False.

    Returns:
        dict: What the file holds.

    Raises:
        CheckpointError: the path is missing or a directory; the file is not a PyTorch
            checkpoint (torch's reason is quoted); it pickles objects other than tensors while
            ``trust`` is False; or it holds something other than a dict.
    """
    source = os.fspath(source)
    if not is_url(source):
        _check_local_file(source)
    try:
        if trust:
            if is_url(source):
                raise CheckpointError(
                    f'{source}: --trust reads local files only; download it first'
                )
            content = torch.load(source, map_location='cpu', weights_only=False)
        else:
            content = CheckpointLoader.load_checkpoint(source, map_location='cpu')
    except pickle.UnpicklingError as err:
        # weights_only loading names each global it refuses; any other refusal means the
        # bytes are not a pickle of a checkpoint at all.
        refused = sorted(set(re.findall(r'GLOBAL ([\w.]+)', str(err))))
        if not refused:
            raise CheckpointError(_unreadable(source, err)) from err
        raise CheckpointError(
            f'{source} pickles objects other than tensors ({", ".join(refused)}; a timm '
            "training checkpoint pickles its argparse 'args'), which torch.load refuses by "
            f'default because unpickling them can run code. {TRUST_HINT}'
        ) from err
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 -- torch.load fails in many ways on other files
        raise CheckpointError(_unreadable(source, err)) from err
    if not isinstance(content, dict):
        raise CheckpointError(
            f'{source} holds {_describe(content)}, expected a dict (a state_dict, or one under '
            '"state_dict" or "model"): it is not a checkpoint of model weights'
        )
    return content


def _check_local_file(path: str) -> None:
    if not osp.exists(path):
        raise CheckpointError(f'No checkpoint file at {path!r}')
    if osp.isdir(path):
        inside = sorted(f for f in os.listdir(path) if f.endswith(_CHECKPOINT_SUFFIXES))
        found = (
            f'checkpoint files in it: {", ".join(inside[:_EXAMPLES])}'
            if inside
            else 'it holds no .pth/.pt/.tar/.ckpt file'
        )
        raise CheckpointError(
            f'{path!r} is a directory, not a checkpoint file; point the '
            f'checkpoint at a file ({found})'
        )


def _unreadable(source: str, err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # torch's weights_only refusal puts the reason on a later line.
    detail = next((line for line in lines if line.startswith('Unsupported')), None)
    reason = f'{type(err).__name__}: {detail or (lines[0] if lines else "")}'
    return (
        f'{source} could not be read as a PyTorch checkpoint ({reason}); an interrupted '
        'download or copy, or another kind of file?'
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f'a Tensor of shape {tuple(obj.shape)}'
    if isinstance(obj, (list, tuple, set)):
        return f'a {type(obj).__name__} of {len(obj)} items'
    return f'a {type(obj).__name__}'


def extract_state_dict(content: dict, source: str = 'checkpoint') -> StateDict:
    """The tensors of a checkpoint: the dict itself or its ``state_dict``/``model`` entry,
    without DDP's ``module.`` prefix."""
    for key in ('state_dict', 'model'):
        if isinstance(content.get(key), dict):
            content = content[key]
            break
    state_dict = OrderedDict(
        (re.sub(r'^module\.', '', k), v) for k, v in content.items() if isinstance(v, Tensor)
    )
    if not state_dict:
        raise CheckpointError(
            f'{source} holds no tensors (keys: {list(content)[:10]}): it is '
            'not a checkpoint of model weights'
        )
    return state_dict


def strip_prefix(
    state_dict: StateDict, prefix: Optional[str] = None
) -> Tuple[StateDict, Dict[str, List[str]]]:
    """The tensors under ``prefix`` (default: ``'backbone.'`` when the file has such keys,
    as MMPretrain, MMDetection and MMSegmentation write them), with it stripped, and the
    other keys as ``{reason: keys}``."""
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if not prefix:
        return state_dict, {}
    kept = OrderedDict((k[len(prefix) :], v) for k, v in state_dict.items() if k.startswith(prefix))
    if not kept:
        raise CheckpointError(
            f'No key of the checkpoint starts with {prefix!r} (first '
            f'keys: {", ".join(list(state_dict)[:_EXAMPLES])})'
        )
    outside = [k for k in state_dict if not k.startswith(prefix)]
    return kept, ({f'tensors outside {prefix!r} (neck, heads)': outside} if outside else {})


# ---------------------------------------------------------------------------------------------
# Summaries of key lists
# ---------------------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r'(stages|network)\.(\d+)\.(\d+)\.')


def group_keys(keys: Sequence[str], reference: Optional[Iterable[str]] = None) -> str:
    """A short, readable account of many tensor names: grouped by module prefix, with counts.

    Blocks of a stage are written as ranges (``stages.0.4-5``); a stage of which every block
    (in ``reference``, the keys the range is measured against) is listed becomes
    ``stages.3.*``; indexed norms merge (``norm0-2``).

    Example: ``stages.0.4-5 (40 tensors), stages.2.12-17 (150 tensors), head (2 tensors)``.
    """
    stage_blocks: Dict[Tuple[str, int], Dict[int, int]] = OrderedDict()
    norms: Dict[int, int] = {}
    others: Dict[str, int] = OrderedDict()
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks = stage_blocks.setdefault((match[1], int(match[2])), {})
            blocks[int(match[3])] = blocks.get(int(match[3]), 0) + 1
            continue
        match = re.match(r'norm(\d+)\.', key)
        if match:
            norms[int(match[1])] = norms.get(int(match[1]), 0) + 1
            continue
        match = re.match(r'([^.]+\.\d+)\.', key)  # one entry of a ModuleList
        label = match[1] if match else key.split('.')[0]
        others[label] = others.get(label, 0) + 1

    all_blocks: Dict[Tuple[str, int], set] = {}
    for key in reference or ():
        match = _BLOCK_KEY.match(key)
        if match:
            all_blocks.setdefault((match[1], int(match[2])), set()).add(int(match[3]))

    parts = []
    for (name, stage), blocks in sorted(stage_blocks.items(), key=lambda kv: kv[0][1]):
        whole = all_blocks.get((name, stage)) == set(blocks)
        label = f'{name}.{stage}.*' if whole else f'{name}.{stage}.{_ranges(blocks)}'
        parts.append(_counted(label, sum(blocks.values())))
    if norms:
        parts.append(_counted(f'norm{_ranges(norms)}', sum(norms.values())))
    parts.extend(_counted(label, count) for label, count in others.items())
    return ', '.join(parts)


def _ranges(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2,5'``."""
    indices = sorted(indices)
    runs, start = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [None]):
        if cur != prev + 1:
            runs.append(str(start) if start == prev else f'{start}-{prev}')
            start = cur
    return ','.join(runs)


def count_tensors(count: int) -> str:
    return f'{count} tensor{"s" if count != 1 else ""}'


def _counted(label: str, count: int) -> str:
    return f'{label} ({count_tensors(count)})'


def stage_layout(state_dict: StateDict) -> Tuple[List[int], List[Optional[int]]]:
    """Depth and width of each stage of a state_dict in the ``stages.S.J.*`` layout.

    The width is the length of ``stages.S.0.norm1.weight`` (both generations have it).
    Returns ``([], [])`` when there are no stage keys.
    """
    blocks: Dict[int, set] = {}
    for key in state_dict:
        match = re.match(r'stages\.(\d+)\.(\d+)\.', key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks:
        return [], []
    depths = [max(blocks[s]) + 1 if s in blocks else 0 for s in range(max(blocks) + 1)]
    widths = []
    for stage in range(len(depths)):
        norm = state_dict.get(f'stages.{stage}.0.norm1.weight')
        widths.append(int(norm.shape[0]) if norm is not None else None)
    return depths, widths


# ---------------------------------------------------------------------------------------------
# Loading into a backbone
# ---------------------------------------------------------------------------------------------


def missing_file_message(model: nn.Module, path: str) -> str:
    """The error for a pretrained file that is not there."""
    where = '' if osp.isabs(path) else f' (looked in {os.getcwd()})'
    return (
        f'{type(model).__name__}: pretrained checkpoint {path!r} not found{where}. Get '
        f'it as {model.weights_source}; or, {OPT_OUT}.'
    )


def identify(state_dict: StateDict, model: nn.Module) -> Tuple[Optional[str], Optional[str]]:
    """``(class name, arch name)`` of the generation whose layout raw tensors have, trying the
    model's own generation first: the arch name is None for a custom arch, and both are None
    when no generation's layout fits."""
    for cls in model.generations():
        try:
            converted = cls.from_release_layout(state_dict)[0]
        except Exception:  # noqa: BLE001 -- another generation's converter may not apply
            continue
        if cls.holds_layout(converted):
            return cls.__name__, cls.arch_name_of(converted)
    return None, None


def load_pretrained(
    model: nn.Module,
    checkpoint: str,
    prefix: Optional[str] = None,
    allow_partial: bool = False,
    logger: Optional[MMLogger] = None,
) -> None:
    """Load pretrained weights into a SPANet or SPANetV2 backbone.

    The file may be in the authors' layout of the model's generation (renamed with
    ``model.from_release_layout``), in this package's layout, or a downstream file whose
    backbone keys start with ``backbone.`` (or ``prefix``).

    Dropped without complaint (and reported): what the authors' files hold but the backbone
    rebuilds or does not have by design (``from_release_layout`` says which), the ImageNet
    classifier (``head``, and the classifier ``norm`` where the backbone has no such norm),
    norms of stages that are not in ``out_indices``, and everything outside ``prefix``. Left
    at their initial values without complaint (and reported): output norms the file has none
    for (a classification file normalises only its last stage).

    Everything else raises :class:`CheckpointError` unless ``allow_partial``: backbone
    tensors of the file that this backbone lacks (another depth or arch), tensors of this
    backbone the file lacks, and shape mismatches. With ``allow_partial=True`` the tensors
    that fit are loaded, the rest keep their initial values, and the summary is logged as a
    WARNING. A file of the other generation never loads, not even partially.

    One log line (INFO) summarises what was loaded, dropped and left at initial values,
    grouped by module prefix with counts; the full key lists go to DEBUG.

    Args:
        model (nn.Module): The backbone (a ``SpectralBackbone``).
        checkpoint (str): A path, or an address MMEngine reads (``https://...``).
        prefix (str, optional): Take only keys under this prefix (stripped). Defaults to
            ``'backbone.'`` when the file has such keys.
        allow_partial (bool): Accept a file that covers the backbone only partly or holds
            tensors of another arch. Defaults to False.
        logger (MMLogger, optional): Where to log. Defaults to the current MMLogger.

    Raises:
        CheckpointError: see above; also for a missing file and for every file that is not
            a checkpoint (see :func:`read_checkpoint`).
    """
    logger = logger or MMLogger.get_current_instance()
    name = type(model).__name__
    if not isinstance(checkpoint, (str, os.PathLike)) or not os.fspath(checkpoint):
        raise CheckpointError(
            f'{name}: init_cfg checkpoint must be a file path or a URL, '
            f'got {checkpoint!r}; {OPT_OUT}'
        )
    path = os.fspath(checkpoint)
    if not is_url(path) and not osp.exists(path):
        raise CheckpointError(missing_file_message(model, path))
    raw, dropped = strip_prefix(extract_state_dict(read_checkpoint(path), path), prefix)
    state_dict, released = model.from_release_layout(raw)
    for reason, keys in released.items():
        dropped.setdefault(reason, []).extend(keys)

    fit = _Fit.of(model, state_dict, dropped)
    file_class, file_arch = identify(raw, model)
    if file_class is not None and file_class != name:
        # Another generation: tensors that happen to share a name and shape (norms) would
        # load into unrelated layers, so no option makes this a partial load.
        arch = f"arch '{file_arch}'" if file_arch else 'a custom arch'
        build = f"type='{file_class}'" + (f", arch='{file_arch}'" if file_arch else '')
        raise CheckpointError(
            f'{path} is a {file_class} checkpoint ({arch}), not a {name} one: build the '
            f'backbone with {build}, or use {name} weights (see {model.weights_source}).'
        )
    looks_like = (
        f"looks like {file_class} arch '{file_arch}'"
        if file_arch
        else _unnamed_layout(state_dict, name)
    )
    if not fit.usable:
        raise CheckpointError(
            f'{name} ({model.arch_label}): {path} has no tensor this backbone can use; it '
            f'{looks_like} (first keys: {", ".join(list(raw)[:_EXAMPLES])})'
        )
    problems = fit.problems(state_dict)
    if problems and not allow_partial:
        if file_arch and file_arch != model.arch_name:
            suggestion = (
                f"build the backbone with arch='{file_arch}' or use weights made "
                f'for {model.arch_label}; '
            )
        else:
            suggestion = (
                'use weights that fit this backbone (its arch and settings such as in_channels); '
            )
        raise CheckpointError(
            f'{name} ({model.arch_label}) does not fit {path}, which {looks_like}:\n  - '
            + '\n  - '.join(problems)
            + f'\nTo fix it, {suggestion}to load only the tensors '
            'that fit and keep the others at their initial values on purpose, set '
            f"init_cfg=dict(type='Pretrained', checkpoint={path!r}, allow_partial=True)."
        )

    model.load_state_dict(fit.usable, strict=False)
    identity = f" (it looks like {file_class} arch '{file_arch}')" if file_arch else ''
    fit.log(f'{name}: loaded {count_tensors(len(fit.usable))} from {path}{identity}', raw, logger)


@dataclass
class _Fit:
    """How the tensors of a file fit a backbone.

    Attributes:
        own: the backbone's state_dict.
        usable: the tensors that load.
        dropped: ``{reason: keys}`` left out by design.
        foreign: keys of the file the backbone lacks (another arch).
        mismatched: keys of another shape.
        missing: keys of the backbone the file lacks.
        expected_absent: output norms the file has none for (a classification file).
    """

    own: StateDict
    usable: StateDict = field(default_factory=OrderedDict)
    dropped: Dict[str, List[str]] = field(default_factory=dict)
    foreign: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    expected_absent: List[str] = field(default_factory=list)

    @classmethod
    def of(cls, model: nn.Module, state_dict: StateDict, dropped: Dict[str, List[str]]) -> '_Fit':
        fit = cls(model.state_dict(), dropped=dropped)
        for key, value in state_dict.items():
            if key not in fit.own:
                reason = _expected_extra(model, key)
                if reason:
                    fit.dropped.setdefault(reason, []).append(key)
                else:
                    fit.foreign.append(key)
            elif value.shape != fit.own[key].shape:
                fit.mismatched.append(key)
            else:
                fit.usable[key] = value
        for key in fit.own:
            if key not in state_dict:
                absent = fit.expected_absent if re.match(r'norm\d+\.', key) else fit.missing
                absent.append(key)
        return fit

    @property
    def partial(self) -> bool:
        return bool(self.foreign or self.missing or self.mismatched)

    def problems(self, state_dict: StateDict) -> List[str]:
        """What keeps the file from fitting, one line per kind."""
        problems = []
        if self.foreign:
            problems.append(
                f'{count_tensors(len(self.foreign))} of the file not in this backbone: '
                f'{group_keys(self.foreign, state_dict)}'
            )
        if self.missing:
            problems.append(
                f'{count_tensors(len(self.missing))} of this backbone not in the file: '
                f'{group_keys(self.missing, self.own)}'
            )
        if self.mismatched:
            shapes = '; '.join(
                f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(self.own[k].shape)}'
                for k in self.mismatched[:_EXAMPLES]
            )
            more = len(self.mismatched) - _EXAMPLES
            problems.append(
                f'{count_tensors(len(self.mismatched))} of another shape '
                f'({group_keys(self.mismatched, self.own)}): {shapes}'
                + (f'; and {more} more' if more > 0 else '')
            )
        return problems

    def log(self, headline: str, raw: StateDict, logger: MMLogger) -> None:
        """One summary line (INFO, or WARNING for a partial load), the key lists at DEBUG."""
        initial = self.missing + self.mismatched + self.expected_absent
        summary = [headline]
        if self.dropped:
            summary.append(
                'dropped '
                + '; '.join(
                    f'{len(keys)} {reason}: {group_keys(keys, raw)}'
                    for reason, keys in self.dropped.items()
                )
            )
        if self.foreign:
            summary.append(
                f'dropped {count_tensors(len(self.foreign))} this backbone lacks '
                f'(allow_partial): {group_keys(self.foreign, raw)}'
            )
        if self.mismatched:
            summary.append(
                f'skipped {count_tensors(len(self.mismatched))} of another shape '
                f'(allow_partial): {group_keys(self.mismatched, self.own)}'
            )
        if initial:
            why = []
            if self.expected_absent:
                why.append(
                    'the file has no norm for these outputs, as expected of a '
                    'classification checkpoint, which normalises only its last stage'
                )
            if self.missing or self.mismatched:
                why.append('allow_partial=True')
            summary.append(
                f'{group_keys(initial, self.own)} kept their initial values ({"; ".join(why)})'
            )
        else:
            summary.append('every tensor of the backbone was loaded')
        level = logging.WARNING if self.partial else logging.INFO
        print_log('; '.join(summary), logger=logger, level=level)
        name = headline.split(':')[0]
        for what, keys in (
            ('loaded', list(self.usable)),
            ('dropped', [f'{k} ({reason})' for reason, ks in self.dropped.items() for k in ks]),
            ('not in this backbone (allow_partial)', self.foreign),
            ('of another shape (allow_partial)', self.mismatched),
            ('kept their initial values', initial),
        ):
            if keys:
                print_log(
                    f'{name} checkpoint keys {what}: {", ".join(keys)}',
                    logger=logger,
                    level=logging.DEBUG,
                )


def _expected_extra(model: nn.Module, key: str) -> Optional[str]:
    """Why a tensor of the file that the backbone lacks is dropped by design, or None when
    it belongs to a backbone of another arch."""
    first = key.split('.')[0]
    if first in ('head', 'norm'):
        return CLASSIFIER_REASON
    match = re.fullmatch(r'norm(\d+)', first)
    if match and int(match[1]) < model.num_stages and int(match[1]) not in model.out_indices:
        return f'norms of stages that are not outputs (out_indices={model.out_indices})'
    return None


def _unnamed_layout(state_dict: StateDict, name: str) -> str:
    depths, widths = stage_layout(state_dict)
    if not depths:
        return f'holds no {name} stages'
    return f'matches no named arch (its stages have depths {depths}, embed_dims {widths})'
