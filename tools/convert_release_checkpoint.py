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

import torch

# Let `python tools/convert_release_checkpoint.py` work from a checkout that is not installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from spanet_mm.checkpoint import CheckpointError, extract_state_dict, read_checkpoint  # noqa: E402
from spanet_mm.models import SPANet, SPANetV2  # noqa: E402


def convert(state_dict):
    """Release tensors (either generation) -> ``backbone.*`` and ``head.*``.

    Returns:
        tuple: The converted state_dict and the keys dropped.
    """
    for generation in (SPANet, SPANetV2):
        if generation.is_release_layout(state_dict):
            return generation.release_to_classifier(state_dict)
    raise CheckpointError(
        "not in a release layout: neither SPANet's (patch_embed./network. "
        "keys) nor SPANetV2's (downsample_layers./stages. keys); first keys: "
        f'{list(state_dict)[:5]}'
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to write the plain state_dict')
    parser.add_argument(
        '--trust',
        action='store_true',
        help='allow unpickling non-tensor objects (only for files you trust)',
    )
    args = parser.parse_args(argv)
    try:
        content = read_checkpoint(args.src, trust=args.trust)
        state_dict, dropped = convert(extract_state_dict(content, args.src))
    except CheckpointError as err:
        print(f'convert_release_checkpoint: {err}', file=sys.stderr)
        return 1
    torch.save(state_dict, args.dst)
    print(
        f'wrote {len(state_dict)} tensors to {args.dst}; dropped {len(dropped)} (fixed SPF masks)'
        if dropped
        else f'wrote {len(state_dict)} tensors to {args.dst}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
