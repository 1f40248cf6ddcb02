"""Convert an authors' SPANet checkpoint to a plain state_dict in spanet_mm's layout.

    python tools/convert_release_checkpoint.py IN OUT [--trust]

OUT holds only tensors (it loads with ``torch.load(weights_only=True)``), named as an
MMPretrain ``ImageClassifier`` with a SPANet backbone names them: ``backbone.*`` (the final
``norm`` becomes ``backbone.norm3``) and ``head.fc.*``. The release's fixed SPF masks are
dropped. OUT works as ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` for the backbone
of any detector or segmentor, and as ``load_from`` for configs/mmpretrain.

A timm training checkpoint pickles ``args`` (an ``argparse.Namespace``); reading it runs
the unpickler on arbitrary objects, which this tool only does with ``--trust``.
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from spanet_mm.checkpoint import (CheckpointError, extract_state_dict,  # noqa: E402
                                  is_release_layout, read_checkpoint, release_to_spanet_mm)


def convert(state_dict):
    """Release (or already converted) tensors -> ``backbone.*`` and ``head.fc.*``."""
    if not is_release_layout(state_dict):
        raise CheckpointError('not in the release layout (no patch_embed./network. keys)')
    stage_indices = [int(m[1]) for k in state_dict if (m := re.match(r'network\.(\d+)\.', k))]
    num_stages = max(stage_indices) // 2 + 1
    renamed, dropped = release_to_spanet_mm(state_dict, num_stages)
    out = OrderedDict()
    for key, value in renamed.items():
        out[('head.fc.' + key[5:]) if key.startswith('head.') else 'backbone.' + key] = value
    return out, dropped


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to write the plain state_dict')
    parser.add_argument('--trust', action='store_true',
                        help='allow unpickling non-tensor objects (only for files you trust)')
    args = parser.parse_args(argv)
    try:
        content = read_checkpoint(args.src, trust=args.trust)
        state_dict, dropped = convert(extract_state_dict(content, args.src))
    except CheckpointError as err:
        print(f'convert_release_checkpoint: {err}', file=sys.stderr)
        return 1
    torch.save(state_dict, args.dst)
    print(f'wrote {len(state_dict)} tensors to {args.dst}; dropped {len(dropped)} fixed SPF '
          'masks')
    return 0


if __name__ == '__main__':
    sys.exit(main())
