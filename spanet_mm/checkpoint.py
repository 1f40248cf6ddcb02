"""Reading SPANet checkpoints: the authors' release layout, ours, and downstream files.

The authors' ImageNet weights (timm training) name things ``patch_embed.proj``,
``network.{0,2,4,6}.{j}`` (stages), ``network.{1,3,5}.proj`` (down-sampling), ``norm``/``head``
(classifier) and ``norm{0,2,4,6}`` (their detection models), and store each SPF's fixed mask
as ``sps.{i}.filter``. :func:`release_to_spanet_mm` renames them to this package's layout;
the masks are dropped, because here they are rebuilt for every feature size.
"""
import logging
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import MMLogger, print_log
from torch import Tensor, nn

StateDict = Dict[str, Tensor]

# Block-internal names that differ between the release and this package.
_RELEASE_BLOCK_RENAMES = (
    ('token_mixer.conv.', 'token_mixer.dwconv.'),
    ('token_mixer.pws.', 'token_mixer.context_convs.'),
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_checkpoint(path: str, trust: bool = False) -> dict:
    """Load a checkpoint file with ``torch.load``, safely unless ``trust`` is set.

    Args:
        path (str): The file.
        trust (bool): Allow arbitrary pickled objects (only for files from a trusted
            source: unpickling can run code). Defaults to False.

    Returns:
        dict: What the file holds.

    Raises:
        CheckpointError: the file is missing, not a PyTorch checkpoint, or pickles objects
            other than tensors while ``trust`` is False.
    """
    if not osp.isfile(path):
        raise CheckpointError(f'No checkpoint file at {path!r}')
    try:
        content = torch.load(path, map_location='cpu', weights_only=not trust)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' in str(err):
            raise CheckpointError(
                f'{path} pickles objects other than tensors (for example the argparse '
                "Namespace 'args' that timm saves), which torch.load refuses by default. If "
                'you trust its source, convert it once with `python '
                'tools/convert_release_checkpoint.py IN OUT --trust` and use OUT.') from err
        raise CheckpointError(f'{path} is not a PyTorch checkpoint: {err}') from err
    except Exception as err:  # noqa: BLE001 -- torch.load fails in many ways on non-checkpoints
        raise CheckpointError(f'{path} is not a PyTorch checkpoint: {err}') from err
    if not isinstance(content, dict):
        raise CheckpointError(f'{path} holds a {type(content).__name__}, expected a dict '
                              '(a state_dict, or one under "state_dict" or "model")')
    return content


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
        raise CheckpointError(f'{source} holds no tensors (keys: {list(content)[:10]})')
    return state_dict


def is_release_layout(state_dict: StateDict) -> bool:
    return any(k.startswith(('network.', 'patch_embed.')) for k in state_dict)


def release_to_spanet_mm(state_dict: StateDict,
                         num_stages: int = 4) -> Tuple[StateDict, List[str]]:
    """Rename the authors' keys to this package's.

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


MASK_REASON = 'fixed SPF masks, rebuilt here for each input size'


def to_backbone_state_dict(state_dict: StateDict, num_stages: int,
                           prefix: Optional[str] = None
                           ) -> Tuple[StateDict, Dict[str, List[str]]]:
    """Bring any supported layout to this package's backbone keys.

    Handles the release layout, ``backbone.``-prefixed files written by MMPretrain,
    MMDetection or MMSegmentation, and an explicit ``prefix``. Returns the state_dict and
    the keys left out on the way, grouped by reason.
    """
    dropped: Dict[str, List[str]] = {}
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        kept = OrderedDict(
            (k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))
        outside = [k for k in state_dict if not k.startswith(prefix)]
        if outside:
            dropped[f'outside {prefix!r}'] = outside
        if not kept:
            raise CheckpointError(f'No key of the checkpoint starts with {prefix!r}')
        state_dict = kept
    if is_release_layout(state_dict):
        state_dict, masks = release_to_spanet_mm(state_dict, num_stages)
        if masks:
            dropped[MASK_REASON] = masks
    return state_dict, dropped


def load_pretrained(model: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                    logger: Optional[MMLogger] = None) -> None:
    """Load pretrained weights into a :class:`~spanet_mm.SPANet` backbone.

    Tensors whose shapes differ from the model's raise :class:`CheckpointError` naming
    each of them; keys the backbone does not have (the classification head, norms of stages
    that are not outputs, masks) are dropped and listed, with the parameters that kept their
    initial values, in one log line. A missing file only warns, so a config that points at
    weights not yet downloaded still trains (from scratch).
    """
    logger = logger or MMLogger.get_current_instance()
    if not osp.isfile(checkpoint):
        print_log(f'SPANet: pretrained checkpoint {checkpoint!r} not found; the backbone '
                  'keeps its random initialisation (see README, "Pretrained weights").',
                  logger=logger, level=logging.WARNING)
        return
    state_dict = extract_state_dict(read_checkpoint(checkpoint), checkpoint)
    state_dict, dropped = to_backbone_state_dict(state_dict, model.num_stages, prefix)

    own = model.state_dict()
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items() if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f'{len(mismatched)} tensors of {checkpoint} do not match the SPANet '
            f'(arch embed_dims={model.embed_dims}, depths={model.depths}) in shape:\n  ' +
            '\n  '.join(mismatched))
    foreign = [k for k in state_dict if k not in own]
    if foreign:
        dropped['not in this backbone'] = foreign
    usable = OrderedDict((k, v) for k, v in state_dict.items() if k in own)
    if not usable:
        raise CheckpointError(f'{checkpoint} has no tensor this SPANet can use '
                              f'(first keys: {list(state_dict)[:5]})')
    model.load_state_dict(usable, strict=False)
    initial = [k for k in own if k not in usable]
    print_log(
        f'SPANet: loaded {len(usable)} tensors from {checkpoint}; dropped: '
        f'{_describe_dropped(dropped)}; kept their initial values: '
        f'{", ".join(initial) if initial else "none"}', logger=logger)


def _describe_dropped(dropped: Dict[str, List[str]]) -> str:
    if not dropped:
        return 'none'
    parts = []
    for reason, keys in dropped.items():
        # The release stores three masks per block; naming each one says nothing more.
        listed = '' if reason == MASK_REASON else ': ' + ', '.join(keys)
        parts.append(f'{len(keys)} {reason}{listed}')
    return '; '.join(parts)
