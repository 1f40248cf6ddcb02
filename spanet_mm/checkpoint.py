"""Reading SPANet and SPANetV2 checkpoints: the authors' release layouts, ours, downstream files.

:func:`load_pretrained` is what ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` runs for
every :class:`~spanet_mm.models.base.SpectralBackbone`. It never loads the wrong thing
silently:

- a file that is not a checkpoint (a directory, an empty, truncated, text, JSON or HTML file,
  a pickle of something else) raises :class:`CheckpointError` saying what the file is;
- a missing file raises, naming the path and where the README says to get the weights
  (``init_cfg=None`` trains without them, on purpose);
- tensors the release stores but the backbone rebuilds or does not have by design (the v1
  fixed spectral masks, the ImageNet classifier, norms of stages that are not outputs) are
  dropped and reported; any *other* tensor the backbone lacks (another depth or arch), any
  tensor of the backbone the file lacks (except output norms a classification file has none
  for) and any shape mismatch raise, naming the groups of tensors, the arch the file looks
  like and the option ``allow_partial=True`` that accepts a partial load on purpose.

The authors' SPANet (v1) ImageNet weights (timm training) name things ``patch_embed.proj``,
``network.{0,2,4,6}.{j}`` (stages), ``network.{1,3,5}.proj`` (down-sampling), ``norm``/``head``
(classifier) and ``norm{0,2,4,6}`` (their detection models), and store each SPF's fixed mask
as ``sps.{i}.filter``. :func:`release_to_spanet_mm` renames them to this package's layout
(:meth:`SPANet.from_release_layout <spanet_mm.SPANet.from_release_layout>` calls it); the masks
are dropped, because here they are rebuilt for every feature size.
"""
import json
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import MMLogger, print_log
from torch import Tensor, nn

StateDict = Dict[str, Tensor]

# Block-internal names that differ between the v1 release and this package.
_RELEASE_BLOCK_RENAMES = (
    ('token_mixer.conv.', 'token_mixer.dwconv.'),
    ('token_mixer.pws.', 'token_mixer.context_convs.'),
)

MASK_REASON = 'fixed SPF masks (rebuilt here for each input size)'
CLASSIFIER_REASON = 'tensors of the ImageNet classifier (not part of a backbone)'

# Where the README says to get each generation's weights (named in the missing-file error).
_WEIGHTS_SOURCES = {
    'SPANet': ('README.md, section "Pretrained weights": the assets of '
               'https://github.com/DoranLyong/SPANet-official/releases (release '
               '"ImageNet-pretrained")'),
    'SPANetV2': ('README.md, section "SPANetV2 pretrained weights": the assets of '
                 'https://github.com/DoranLyong/SPANetV2-official/releases (release '
                 '"ImageNet-1K")'),
}
_OPT_OUT = ('to train without pretrained weights on purpose, set the backbone\'s '
            'init_cfg=None (e.g. `--cfg-options model.backbone.init_cfg=None`)')
_CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.tar', '.ckpt', '.bin', '.safetensors')
# How many tensor names an error or INFO line spells out before summarising.
_EXAMPLES = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


# ---------------------------------------------------------------------------------------------
# Reading a file
# ---------------------------------------------------------------------------------------------


def read_checkpoint(path: str, trust: bool = False) -> dict:
    """Load a checkpoint file with ``torch.load``, safely unless ``trust`` is set.

    Args:
        path (str): The file.
        trust (bool): Allow arbitrary pickled objects (only for files from a trusted
            source: unpickling can run code). Defaults to False.

    Returns:
        dict: What the file holds.

    Raises:
        CheckpointError: the path is missing or a directory; the file is empty, truncated,
            text (JSON, HTML, ...) or otherwise not a PyTorch checkpoint; it holds something
            other than a dict; or it pickles objects other than tensors while ``trust`` is
            False (the message says whether it is a real checkpoint that ``--trust``
            conversion would read, or a pickle of something else).
    """
    path = os.fspath(path)
    kind = _sniff(path)
    try:
        content = torch.load(path, map_location='cpu', weights_only=not trust)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' in str(err):
            raise CheckpointError(_refusal_message(path, err)) from err
        raise CheckpointError(_load_failure_message(path, kind, err)) from err
    except Exception as err:  # noqa: BLE001 -- torch.load fails in many ways on non-checkpoints
        raise CheckpointError(_load_failure_message(path, kind, err)) from err
    if not isinstance(content, dict):
        raise CheckpointError(
            f'{path} holds {_describe_object(content)}, expected a dict (a state_dict, or one '
            'under "state_dict" or "model"): it is not a checkpoint of model weights')
    return content


def _sniff(path: str) -> str:
    """Reject what is plainly not a checkpoint before ``torch.load`` sees it; return the
    container kind (``'zip'``, ``'pickle'`` or ``'unknown'``) for later messages."""
    if not osp.exists(path):
        raise CheckpointError(f'No checkpoint file at {path!r}')
    if osp.isdir(path):
        inside = sorted(f for f in os.listdir(path) if f.endswith(_CHECKPOINT_SUFFIXES))
        found = (f'checkpoint files in it: {", ".join(inside[:_EXAMPLES])}'
                 + (f' and {len(inside) - _EXAMPLES} more' if len(inside) > _EXAMPLES else '')
                 if inside else 'it holds no .pth/.pt/.tar/.ckpt file')
        raise CheckpointError(f'{path!r} is a directory, not a checkpoint file; point the '
                              f'checkpoint at a file ({found})')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointError(f'{path!r} is empty (0 bytes), not a checkpoint: an '
                              'interrupted download or copy? Fetch the file again.')
    with open(path, 'rb') as f:
        head = f.read(4096)
    if head.startswith(b'PK\x03\x04'):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f'{path!r} is truncated: it starts as a PyTorch (zip) checkpoint but its end '
                f'is missing ({size} bytes; an interrupted download or copy?). Fetch the '
                'file again.')
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(n.endswith('data.pkl') for n in names):
            raise CheckpointError(f'{path!r} is a zip archive but not a PyTorch checkpoint '
                                  f'(no data.pkl in it; entries: {names[:_EXAMPLES]})')
        return 'zip'
    if head[:1] == b'\x80':
        return 'pickle'
    if head[:2] == b'\x1f\x8b':
        raise CheckpointError(f'{path!r} is gzip-compressed, not a PyTorch checkpoint: '
                              'decompress it (gunzip) and use the file inside')
    if len(head) > 262 and head[257:262] == b'ustar':
        raise CheckpointError(f'{path!r} is a tar archive, not a PyTorch checkpoint: unpack '
                              'it (tar -xf) and use the .pth file inside')
    if len(head) > 9 and head[8:9] == b'{' and b'"dtype"' in head:
        raise CheckpointError(
            f'{path!r} is a safetensors file; convert it once to a PyTorch state_dict '
            '(torch.save(safetensors.torch.load_file(PATH), OUT)) and use OUT')
    text = _as_text(head)
    if text is not None:
        raise CheckpointError(_text_message(path, text, size))
    return 'unknown'


def _as_text(head: bytes) -> Optional[str]:
    """``head`` decoded if it looks like text (UTF-8, no NUL bytes), else None."""
    if b'\x00' in head:
        return None
    try:
        # A multi-byte character may be cut at the end of the sample.
        text = head.decode('utf-8') if len(head) < 4096 else head[:-3].decode('utf-8')
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c in '\n\r\t' for c in text)
    return text if printable >= 0.95 * max(len(text), 1) else None


def _text_message(path: str, text: str, size: int) -> str:
    start = text.lstrip()
    preview = start[:60].replace('\n', ' ')
    lower = start[:200].lower()
    if lower.startswith(('<!doctype html', '<html')) or '<html' in lower:
        what = ('an HTML page, not a PyTorch checkpoint: the download saved a web page '
                'instead of the file (use the asset\'s .../releases/download/... address)')
    elif start.startswith('version https://git-lfs'):
        what = ('a Git LFS pointer, not a PyTorch checkpoint: fetch the real file '
                '(git lfs pull)')
    elif start[:1] in '{[' and _is_json(path, size):
        what = 'a JSON file, not a PyTorch checkpoint'
    else:
        what = 'a text file, not a PyTorch checkpoint'
    return f'{path!r} is {what} (it starts with {preview!r})'


def _is_json(path: str, size: int) -> bool:
    if size > 64 * 2**20:
        return True  # Too big to parse for a message; its first character says enough.
    try:
        with open(path, encoding='utf-8') as f:
            json.load(f)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _load_failure_message(path: str, kind: str, err: Exception) -> str:
    text = f'{type(err).__name__}: {err}'
    truncated = ('truncated', 'EOF', 'Ran out of input', 'central directory',
                 'unexpected end')
    if kind in ('zip', 'pickle') and any(t.lower() in text.lower() for t in truncated):
        return (f'{path!r} is truncated or damaged: it starts as a PyTorch checkpoint but '
                f'cannot be read to its end ({text}); fetch the file again')
    return f'{path} is not a PyTorch checkpoint: torch.load failed with {text}'


def _refusal_message(path: str, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``: a real checkpoint that also
    pickles other objects (``--trust`` conversion reads it) or a pickle of something else."""
    probe = _probe_pickle(path)
    refused = re.findall(r'GLOBAL ([\w.]+)', str(err))
    if probe is None:
        if not refused:
            return (f'{path} is not a PyTorch checkpoint: torch.load could not read it '
                    f'({_short(err)})')
        # The structure could not be read without unpickling; say what torch said.
        return (f'{path} pickles objects other than tensors ({", ".join(refused)}), which '
                'torch.load refuses by default. If it is a checkpoint from a source you '
                'trust, convert it once with `python tools/convert_release_checkpoint.py IN '
                'OUT --trust` and use OUT.')
    tensors, others, top = probe
    if tensors:
        listed = ', '.join(f'{where}: {name}' if where else name
                           for where, name in others[:_EXAMPLES]) or ', '.join(refused)
        return (f'{path} is a checkpoint ({tensors} tensors) that also pickles objects other '
                f'than tensors ({listed}; for example the argparse Namespace \'args\' that '
                'timm saves), which torch.load refuses by default because unpickling them can '
                'run code. If you trust its source, convert it once with `python '
                'tools/convert_release_checkpoint.py IN OUT --trust` and use OUT.')
    names = sorted({name for _, name in others if name != top})
    inside = f' (holding {", ".join(names[:_EXAMPLES])})' if names else ''
    return (f'{path} holds a pickled {top}{inside} and no tensors: it is not a checkpoint of '
            'model weights')


def _short(err: Exception) -> str:
    """The informative line of a (long) torch.load error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for marker in ('Unsupported', 'WeightsUnpickler error'):
        for line in lines:
            if marker in line:
                return line[line.index(marker):]
    return lines[-1] if lines else type(err).__name__


def _describe_object(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f'a Tensor of shape {tuple(obj.shape)}'
    if isinstance(obj, (list, tuple, set)):
        return f'a {type(obj).__name__} of {len(obj)} items'
    return f'a {type(obj).__name__}'


# -- looking inside a refused pickle without running it ---------------------------------------


class _Stub:
    """Stands for any object the pickle names: records its class name and contents, runs
    nothing."""
    qualname = '?'

    def __new__(cls, *args: Any, **kwargs: Any) -> '_Stub':
        # The pickle may create it with cls.__new__ alone (NEWOBJ), skipping __init__.
        stub = super().__new__(cls)
        stub.args = args
        stub.items = {}
        return stub

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.items[len(self.items)] = value

    def extend(self, values: Iterable) -> None:
        for value in values:
            self.append(value)


class _ProbeUnpickler(pickle.Unpickler):

    def find_class(self, module: str, name: str) -> type:
        return type('Stub', (_Stub, ), {'qualname': f'{module}.{name}'})

    def persistent_load(self, pid: Any) -> str:
        return '<storage>'


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # torch.serialization.MAGIC_NUMBER
_TENSOR_BUILDERS = ('torch._utils._rebuild', 'torch._tensor._rebuild', 'torch.nn.parameter')


def _probe_pickle(path: str) -> Optional[Tuple[int, List[Tuple[str, str]], str]]:
    """Count the tensors of a pickled file and name its other objects, without unpickling
    anything for real. Returns ``(tensors, [(key, class name), ...], what the top object
    is)``, or None when the structure cannot be read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.endswith('data.pkl'))
                with archive.open(member) as f:
                    obj = _ProbeUnpickler(f).load()
        else:
            with open(path, 'rb') as f:
                obj = _ProbeUnpickler(f).load()
                if obj == _LEGACY_MAGIC:
                    # torch's legacy format: magic number, protocol, system info, object.
                    for _ in range(2):
                        _ProbeUnpickler(f).load()
                    obj = _ProbeUnpickler(f).load()
    except Exception:  # noqa: BLE001 -- any failure means "cannot tell"
        return None
    others: List[Tuple[str, str]] = []
    top = obj.qualname if isinstance(obj, _Stub) else type(obj).__name__
    return _walk(obj, '', others, depth=0), others, top


def _walk(obj: Any, where: str, others: List[Tuple[str, str]], depth: int) -> int:
    if depth > 6:
        return 0
    if isinstance(obj, _Stub):
        if obj.qualname.startswith(_TENSOR_BUILDERS):
            return 1
        if obj.qualname != 'collections.OrderedDict':
            others.append((where, obj.qualname))
        values = list(obj.items.items())
    elif isinstance(obj, dict):
        values = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        values = list(enumerate(obj))
    else:
        return 0
    return sum(
        _walk(value, f'{where}.{key}' if where else str(key), others, depth + 1)
        for key, value in values)


def extract_state_dict(content: dict, source: str = 'checkpoint') -> StateDict:
    """The tensors of a checkpoint: the dict itself or its ``state_dict``/``model`` entry,
    without DDP's ``module.`` prefix."""
    for key in ('state_dict', 'model'):
        if isinstance(content.get(key), dict):
            content = content[key]
            break
    state_dict = OrderedDict(
        (re.sub(r'^module\.', '', k), v) for k, v in content.items()
        if isinstance(v, Tensor))
    if not state_dict:
        raise CheckpointError(f'{source} holds no tensors (keys: {list(content)[:10]}): it is '
                              'not a checkpoint of model weights')
    return state_dict


# ---------------------------------------------------------------------------------------------
# SPANet (v1) release layout
# ---------------------------------------------------------------------------------------------


def is_release_layout(state_dict: StateDict) -> bool:
    """Whether the keys are the authors' SPANet (v1) release names."""
    return any(k.startswith(('network.', 'patch_embed.')) for k in state_dict)


def release_to_spanet_mm(state_dict: StateDict,
                         num_stages: int = 4) -> Tuple[StateDict, List[str]]:
    """Rename the authors' SPANet (v1) keys to this package's.

    Returns:
        tuple: The renamed state_dict (the classifier's ``norm`` becomes
        ``norm{num_stages - 1}``, their ``head`` stays ``head``), and the keys dropped
        (the fixed SPF masks).
    """
    renamed, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        new = _rename_release_key(key, num_stages)
        if new is None:
            dropped.append(key)
        else:
            renamed[new] = value
    return renamed, dropped


def release_num_stages(state_dict: StateDict) -> int:
    """Number of stages of a v1 release state_dict (stages are ``network.{0,2,4,6}``)."""
    indices = [int(m[1]) for k in state_dict if (m := re.match(r'network\.(\d+)\.', k))]
    return max(indices) // 2 + 1 if indices else 4


def _rename_release_key(key: str, num_stages: int) -> Optional[str]:
    if re.search(r'\.sps\.\d+\.filter$', key):
        return None
    if key.startswith('patch_embed.proj.'):
        return 'stem.' + key[len('patch_embed.proj.'):]
    match = re.match(r'network\.(\d+)\.(.*)', key)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        if index % 2 == 1:
            return f'downsamples.{index // 2}.' + re.sub(r'^proj\.', '', rest)
        for old, new in _RELEASE_BLOCK_RENAMES:
            rest = rest.replace(old, new)
        return f'stages.{index // 2}.{rest}'
    match = re.match(r'norm(\d+)\.(.*)', key)
    if match:
        return f'norm{int(match.group(1)) // 2}.{match.group(2)}'
    if key.startswith('norm.'):
        return f'norm{num_stages - 1}.' + key[len('norm.'):]
    return key


# ---------------------------------------------------------------------------------------------
# Which arch a state_dict is
# ---------------------------------------------------------------------------------------------


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
    num_stages = max(blocks) + 1
    depths = [max(blocks[s]) + 1 if s in blocks else 0 for s in range(num_stages)]
    widths = []
    for s in range(num_stages):
        norm = state_dict.get(f'stages.{s}.0.norm1.weight')
        widths.append(int(norm.shape[0]) if norm is not None else None)
    return depths, widths


def arch_names_matching(model_cls: type, state_dict: StateDict) -> List[str]:
    """Names of ``model_cls.arch_settings`` whose depths and widths the tensors have."""
    depths, widths = stage_layout(state_dict)
    return [name for name, arch in model_cls.arch_settings.items()
            if list(arch['depths']) == depths and list(arch['embed_dims']) == widths]


def _spectral_backbone_classes(first: type) -> List[type]:
    """``first`` and every other registered SpectralBackbone class (both generations)."""
    from .models.base import SpectralBackbone
    found, todo = [first], [SpectralBackbone]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in found and sub.arch_settings:
                found.append(sub)
            todo.append(sub)
    return found


def identify(state_dict: StateDict, model_cls: type) -> Tuple[Optional[str], Optional[str]]:
    """``(class name, arch name)`` that the raw tensors look like, trying ``model_cls``
    first and then the other backbone classes; ``(None, None)`` if none fits."""
    for cls in _spectral_backbone_classes(model_cls):
        try:
            converted, _ = cls.from_release_layout(state_dict)
            name = cls.arch_name_of(converted)
        except Exception:  # noqa: BLE001 -- another class's converter may not apply at all
            continue
        if name:
            return cls.__name__, name
    return None, None


# ---------------------------------------------------------------------------------------------
# Summaries of key lists
# ---------------------------------------------------------------------------------------------


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
        match = re.match(r'(stages|network)\.(\d+)\.(\d+)\.', key)
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
        match = re.match(r'(stages|network)\.(\d+)\.(\d+)\.', key)
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


def _n(count: int) -> str:
    return f'{count} tensor{"s" if count != 1 else ""}'


def _counted(label: str, count: int) -> str:
    return f'{label} ({_n(count)})'


# ---------------------------------------------------------------------------------------------
# Loading into a backbone
# ---------------------------------------------------------------------------------------------


def strip_prefix(state_dict: StateDict, prefix: Optional[str] = None
                 ) -> Tuple[StateDict, Dict[str, List[str]]]:
    """The tensors under ``prefix`` (default: ``'backbone.'`` when the file has such keys,
    as MMPretrain, MMDetection and MMSegmentation write them), with it stripped, and the
    other keys as ``{reason: keys}``."""
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if not prefix:
        return state_dict, {}
    kept = OrderedDict(
        (k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))
    if not kept:
        raise CheckpointError(f'No key of the checkpoint starts with {prefix!r} (first '
                              f'keys: {", ".join(list(state_dict)[:_EXAMPLES])})')
    outside = [k for k in state_dict if not k.startswith(prefix)]
    return kept, ({f'tensors outside {prefix!r} (neck, heads)': outside} if outside else {})


def weights_source(model: nn.Module) -> str:
    """Where the README says to get ``model``'s pretrained weights."""
    return _WEIGHTS_SOURCES.get(type(model).__name__,
                                'README.md, section "Pretrained weights"')


def missing_file_message(model: nn.Module, path: str) -> str:
    """The error for a pretrained file that is not there."""
    where = '' if osp.isabs(path) else f' (looked in {os.getcwd()})'
    return (f'{type(model).__name__}: pretrained checkpoint {path!r} not found{where}. Get '
            f'it as {weights_source(model)}; or, {_OPT_OUT}.')


def _arch_name(model: nn.Module) -> Optional[str]:
    """The name of the model's arch in its class's table, if it is a named one."""
    def same(a: Any, b: Any) -> bool:
        # Tuples in one table and lists in the other are the same setting.
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return list(a) == list(b)
        return a == b

    for name, arch in type(model).arch_settings.items():
        if all(same(model.arch.get(k), v) for k, v in arch.items()):
            return name
    return None


def _arch_label(model: nn.Module) -> str:
    named = _arch_name(model)
    named = f"arch '{named}', " if named else ''
    return f'{named}depths {model.depths}, embed_dims {model.embed_dims}'


def load_pretrained(model: nn.Module,
                    checkpoint: str,
                    prefix: Optional[str] = None,
                    allow_partial: bool = False,
                    logger: Optional[MMLogger] = None) -> None:
    """Load pretrained weights into a SPANet or SPANetV2 backbone (any SpectralBackbone).

    The file may be in the authors' layout of the model's generation (renamed with
    ``model.from_release_layout``), in this package's layout, or a downstream file whose
    backbone keys start with ``backbone.`` (or ``prefix``).

    Dropped without complaint (and reported): what the release stores but the backbone
    rebuilds or does not have by design -- the v1 fixed spectral masks, the ImageNet
    classifier (``head``, and the classifier ``norm`` where the backbone has no such norm),
    norms of stages that are not in ``out_indices``, and everything outside ``prefix``.
    Left at their initial values without complaint (and reported): output norms the file
    has none for (a v1 classification file normalises only its last stage).

    Everything else raises :class:`CheckpointError` unless ``allow_partial``: backbone
    tensors of the file that this backbone lacks (another depth or arch), tensors of this
    backbone the file lacks, and shape mismatches. The error names their groups, the arch
    the file looks like (``arch_name_of``) and the ``allow_partial=True`` option. With
    ``allow_partial=True`` the tensors that fit are loaded, the rest keep their initial
    values, and the summary is logged as a WARNING.

    One log line (INFO) summarises what was loaded, dropped and left at initial values,
    grouped by module prefix with counts; the full key lists go to DEBUG.

    Args:
        model (nn.Module): The backbone.
        checkpoint (str): Path of the file.
        prefix (str, optional): Take only keys under this prefix (stripped). Defaults to
            ``'backbone.'`` when the file has such keys.
        allow_partial (bool): Accept a file that covers the backbone only partly or holds
            tensors of another arch. Defaults to False.
        logger (MMLogger, optional): Where to log. Defaults to the current MMLogger.

    Raises:
        CheckpointError: see above; also for a missing file (naming where the README says
            to get it, and the opt-out ``init_cfg=None``) and for every file that is not a
            checkpoint (see :func:`read_checkpoint`).
    """
    logger = logger or MMLogger.get_current_instance()
    name = type(model).__name__
    if not isinstance(checkpoint, (str, os.PathLike)) or not os.fspath(checkpoint):
        raise CheckpointError(f'{name}: init_cfg checkpoint must be a file path, got '
                              f'{checkpoint!r}; {_OPT_OUT}')
    path = os.fspath(checkpoint)
    if re.match(r'^[a-z][a-z0-9+.-]*://', path):
        raise CheckpointError(f'{name}: checkpoint {path!r} is a URL; this package does not '
                              'download weights. Download the file and point checkpoint at '
                              f'it (see {weights_source(model)}).')
    if not osp.exists(path):
        raise CheckpointError(missing_file_message(model, path))
    raw, dropped = strip_prefix(extract_state_dict(read_checkpoint(path), path), prefix)
    # On the instance: a SPANetV2 hook reads the instance's gap_before_final_norm.
    state_dict, released = model.from_release_layout(raw)
    for reason, keys in released.items():
        if keys:
            dropped.setdefault(reason, []).extend(keys)

    own = model.state_dict()
    usable, mismatched, foreign = OrderedDict(), [], []
    for key, value in state_dict.items():
        if key not in own:
            reason = _expected_extra(model, key)
            if reason:
                dropped.setdefault(reason, []).append(key)
            else:
                foreign.append(key)
        elif value.shape != own[key].shape:
            mismatched.append(key)
        else:
            usable[key] = value
    expected_absent, missing = [], []
    for key in own:
        if key not in state_dict:
            (expected_absent if re.match(r'norm\d+\.', key) else missing).append(key)

    file_class, file_arch = identify(raw, type(model))
    looks_like = (f"looks like {file_class} arch '{file_arch}'" if file_arch else
                  _unnamed_layout(state_dict, type(model)))
    if file_class is not None and file_class != name:
        # Another generation: tensors that happen to share a name and shape (norms) would
        # load into unrelated layers, so no option makes this a partial load.
        raise CheckpointError(
            f"{path} is a {file_class} checkpoint (arch '{file_arch}'), not a {name} one: "
            f"build the backbone with type='{file_class}', arch='{file_arch}', or use "
            f'{name} weights (see {weights_source(model)}).')
    if not usable:
        raise CheckpointError(
            f'{name} ({_arch_label(model)}): {path} has no tensor this backbone can use; it '
            f'{looks_like} (first keys: {", ".join(list(raw)[:_EXAMPLES])})')
    problems = []
    if foreign:
        problems.append(f'{_n(len(foreign))} of the file not in this backbone: '
                        f'{group_keys(foreign, state_dict)}')
    if missing:
        problems.append(f'{_n(len(missing))} of this backbone not in the file: '
                        f'{group_keys(missing, own)}')
    if mismatched:
        shapes = '; '.join(
            f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
            for k in mismatched[:_EXAMPLES])
        more = f'; and {len(mismatched) - _EXAMPLES} more' if len(mismatched) > _EXAMPLES else ''
        problems.append(f'{_n(len(mismatched))} of another shape '
                        f'({group_keys(mismatched, own)}): {shapes}{more}')
    if problems and not allow_partial:
        own_arch = _arch_name(model)
        if file_arch and file_class == name and file_arch != own_arch:
            suggestion = (f"build the backbone with arch='{file_arch}' or use weights made "
                          f"for {_arch_label(model)}; ")
        else:
            suggestion = ('use weights that fit this backbone (its arch and settings such '
                          'as in_channels); ')
        raise CheckpointError(
            f'{name} ({_arch_label(model)}) does not fit {path}, which {looks_like}:\n  - ' +
            '\n  - '.join(problems) + f'\nTo fix it, {suggestion}to load only the tensors that '
            'fit and keep the others at their initial values on purpose, set '
            f"init_cfg=dict(type='Pretrained', checkpoint={path!r}, allow_partial=True).")

    model.load_state_dict(usable, strict=False)
    initial = missing + mismatched + expected_absent
    summary = [f'{name}: loaded {_n(len(usable))} from {path}'
               + (f" (it looks like {file_class} arch '{file_arch}')" if file_arch else '')]
    if dropped:
        summary.append('dropped ' + '; '.join(
            f'{len(keys)} {reason}'
            + ('' if reason == MASK_REASON else f': {group_keys(keys, state_dict)}')
            for reason, keys in dropped.items()))
    if foreign:
        summary.append(f'dropped {_n(len(foreign))} this backbone lacks (allow_partial): '
                       f'{group_keys(foreign, state_dict)}')
    if mismatched:
        summary.append(f'skipped {_n(len(mismatched))} of another shape (allow_partial): '
                       f'{group_keys(mismatched, own)}')
    if initial:
        why = []
        if expected_absent:
            why.append('the file has no norm for these outputs, as expected of a '
                       'classification checkpoint, which normalises only its last stage')
        if missing or mismatched:
            why.append('allow_partial=True')
        summary.append(f'{group_keys(initial, own)} kept their initial values '
                       f'({"; ".join(why)})')
    else:
        summary.append('every tensor of the backbone was loaded')
    partial = bool(foreign or missing or mismatched)
    print_log('; '.join(summary), logger=logger,
              level=logging.WARNING if partial else logging.INFO)
    for what, keys in (('loaded', list(usable)), ('dropped', [
            f'{k} ({reason})' for reason, ks in dropped.items() for k in ks]),
                       ('not in this backbone (allow_partial)', foreign),
                       ('of another shape (allow_partial)', mismatched),
                       ('kept their initial values', initial)):
        if keys:
            print_log(f'{name} checkpoint keys {what}: {", ".join(keys)}', logger=logger,
                      level=logging.DEBUG)


def _expected_extra(model: nn.Module, key: str) -> Optional[str]:
    """Why a tensor of the file that the backbone lacks is dropped by design, or None when
    it belongs to a backbone of another arch."""
    first = key.split('.')[0]
    if first in ('head', 'norm'):
        return CLASSIFIER_REASON
    match = re.fullmatch(r'norm(\d+)', first)
    if match and int(match[1]) < model.num_stages and hasattr(model, 'out_indices') and int(
            match[1]) not in model.out_indices:
        return f'norms of stages that are not outputs (out_indices={model.out_indices})'
    return None


def _unnamed_layout(state_dict: StateDict, model_cls: type) -> str:
    depths, widths = stage_layout(state_dict)
    if not depths:
        return f'holds no {model_cls.__name__} stages'
    return (f'matches no named arch (its stages have depths {depths}, embed_dims '
            f'{widths})')
