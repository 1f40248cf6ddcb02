"""Convert an authors' SPANet or SPANetV2 checkpoint to a plain state_dict in spanet_mm's layout.

    python tools/convert_release_checkpoint.py IN OUT [--trust]

OUT holds only tensors (it loads with ``torch.load(weights_only=True)``), named as an
MMPretrain ``ImageClassifier`` of this package names them: ``backbone.*`` and ``head.*``.

- SPANet (ICCV 2023) release files (``patch_embed.*``, ``network.*``): the final ``norm``
  becomes ``backbone.norm3``, ``head`` becomes ``head.fc`` (a ``LinearClsHead``), the fixed
  SPF masks are dropped.
- SPANetV2 release files (``downsample_layers.*``, ``stages.*``): the classifier ``norm``
  becomes ``backbone.norm3`` (the pooled norm of ``gap_before_final_norm=True``), ``head.*``
  stays ``head.*`` (``SPANetV2ClsHead``).

OUT works as ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` for the backbone of any
detector or segmentor, as ``load_from`` for configs/mmpretrain, and as
``get_model('spanet_s_in1k', pretrained=OUT)`` in MMPretrain.

A timm training checkpoint pickles ``args`` (an ``argparse.Namespace``); reading it runs
the unpickler on arbitrary objects, which this tool only does with ``--trust``.
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from spanet_mm.checkpoint import (CheckpointError, extract_state_dict,  # noqa: E402
                                  is_release_layout, read_checkpoint, release_num_stages,
                                  release_to_spanet_mm)


def convert(state_dict):
    """Release tensors (either generation) -> ``backbone.*`` and ``head.*``.

    Returns:
        tuple: The converted state_dict and the keys dropped.
    """
    if is_release_layout(state_dict):
        renamed, dropped = release_to_spanet_mm(state_dict, release_num_stages(state_dict))
        out = OrderedDict()
        for key, value in renamed.items():
            out[('head.fc.' + key[5:]) if key.startswith('head.') else 'backbone.' + key] = value
        return out, dropped
    if any(k.startswith('downsample_layers.') for k in state_dict):
        from spanet_mm.models.spanetv2 import SPANetV2
        renamed, left_out = SPANetV2.from_release_layout(state_dict, gap_before_final_norm=True)
        out = OrderedDict(('backbone.' + k, v) for k, v in renamed.items())
        out.update((k, v) for k, v in state_dict.items() if k.startswith('head.'))
        dropped = [k for keys in left_out.values() for k in keys if not k.startswith('head.')]
        return out, dropped
    raise CheckpointError('not in a release layout: neither SPANet\'s (patch_embed./network. '
                          "keys) nor SPANetV2's (downsample_layers./stages. keys); first keys: "
                          f'{list(state_dict)[:5]}')


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
    print(f'wrote {len(state_dict)} tensors to {args.dst}; dropped {len(dropped)} '
          '(fixed SPF masks)' if dropped else f'wrote {len(state_dict)} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
