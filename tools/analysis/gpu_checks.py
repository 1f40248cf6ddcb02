#!/usr/bin/env python
"""The Python parts of ``tools/analysis/gpu_checks.sh``: checks for one short run on a GPU.

Subcommands::

    # mmcv's compiled ops (nms, sigmoid_focal_loss) against plain PyTorch, and the versions
    python tools/analysis/gpu_checks.py smoke --device cuda
    # SPANet-S on DEVICE against the same model on the CPU (float32, and autocast), and
    # against the paper-literal reference on DEVICE with the same weights
    python tools/analysis/gpu_checks.py correctness --device cuda --json out.json
    # a generated COCO-style dataset (spanet_mm.datasets.make_coco_shapes)
    python tools/analysis/gpu_checks.py make-coco /tmp/coco --num-train 128 --size 800
    # the kernels that take the most time in a float16 forward at a detection size
    python tools/analysis/gpu_checks.py profile spanet:s --size 800x1216 --batch 2 --amp
    # time, data_time and memory of a training run, from MMEngine's scalars log
    python tools/analysis/gpu_checks.py train-stats WORK_DIR --skip 20 --json out.json
    # one line about a result file, for gpu_checks.sh's summary table
    python tools/analysis/gpu_checks.py note fwd out.json
    # the comparison table of `gpu_checks.sh table` from its result files in OUT
    python tools/analysis/gpu_checks.py table work_dirs/gpu_checks

``correctness`` exits with status 1 if any comparison is over its tolerance. With
``--device cpu`` it runs anywhere (CPU against CPU, bfloat16 autocast), to check the script.

The logic: spanet_tools/analysis/gpu_checks.py (the table: spanet_tools/analysis/gpu_table.py).
"""

import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

# Let `python tools/analysis/gpu_checks.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from spanet_mm.engine.cli import size_arg  # noqa: E402
from spanet_tools.analysis import gpu_checks, gpu_table  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('smoke', help='mmcv ops on the device, versions')
    p.add_argument('--device', default='cuda')
    p = sub.add_parser('correctness', help='SPANet-S on the device vs CPU and reference')
    p.add_argument('--device', default='cuda', help='cuda (default) or cpu (a dry run)')
    p.add_argument('--sizes', nargs='+', type=size_arg, default=list(gpu_checks.CORRECTNESS_SIZES))
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument(
        '--tol-float32',
        type=float,
        default=1e-4,
        help='max |a-b| / max |b| allowed in float32 (default %(default)s)',
    )
    p.add_argument(
        '--tol-amp',
        type=float,
        help='the same under autocast (float16 on CUDA: default 1e-2; bfloat16 '
        'on CPU: default 5e-2)',
    )
    p.add_argument('--json')
    p = sub.add_parser('make-coco', help='generated COCO-style shapes')
    p.add_argument('root')
    p.add_argument('--num-train', type=int, default=128)
    p.add_argument('--num-val', type=int, default=4)
    p.add_argument('--size', type=int, default=800)
    p.add_argument(
        '--reuse',
        action='store_true',
        help='keep the data in ROOT if it has as many images of this size',
    )
    p = sub.add_parser('profile', help="the kernels that take a contender's time")
    p.add_argument('model', help='a catalogued contender, FAMILY:ARCH (e.g. spanet:s)')
    p.add_argument('--device', default='cuda')
    p.add_argument('--size', type=size_arg, default=(800, 1216), help='e.g. 224 or 800x1216')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--mode', choices=['forward', 'train'], default='forward')
    p.add_argument(
        '--amp', action='store_true', help='autocast: float16 on CUDA, bfloat16 elsewhere'
    )
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--top', type=int, default=15)
    p.add_argument('--json')
    p = sub.add_parser('train-stats', help='time, data_time, memory from a training log')
    p.add_argument('work_dir')
    p.add_argument('--label', default='train')
    p.add_argument(
        '--skip',
        type=int,
        default=20,
        help='leave out the logged steps up to this iteration (warm-up)',
    )
    p.add_argument('--batch', type=int, default=2, help='images per iteration')
    p.add_argument('--json', help='add the stats under LABEL to this json file')
    p = sub.add_parser('note', help='one line about a result file, for the summary')
    p.add_argument('kind', choices=list(gpu_checks.NOTE_KINDS))
    p.add_argument('file', help='the json file (train: FILE:LABEL)')
    p = sub.add_parser('table', help='the comparison table of gpu_checks.sh table')
    p.add_argument('out_dir', help="the script's OUT, holding the steps' json files")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    if args.command == 'smoke':
        return gpu_checks.run_smoke(args.device)
    if args.command == 'correctness':
        return gpu_checks.check_correctness(
            args.device,
            args.sizes,
            batch=args.batch,
            seed=args.seed,
            tol_float32=args.tol_float32,
            tol_amp=args.tol_amp,
            json_path=args.json,
        )
    if args.command == 'make-coco':
        gpu_checks.make_coco_data(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            size=args.size,
            reuse=args.reuse,
        )
        return 0
    if args.command == 'profile':
        gpu_checks.profile_step(
            args.model,
            args.device,
            args.size,
            batch=args.batch,
            mode=args.mode,
            amp=args.amp,
            rounds=args.rounds,
            top=args.top,
            json_path=args.json,
        )
        return 0
    if args.command == 'train-stats':
        try:
            stats = gpu_checks.train_stats(
                args.work_dir,
                label=args.label,
                skip=args.skip,
                batch=args.batch,
                json_path=args.json,
            )
        except gpu_checks.EmptyTrainingLog:
            print(f'train-stats {args.label}: no training entries logged')
            return 1
        print(gpu_checks.format_train_stats(stats))
        return 0
    if args.command == 'table':
        print(gpu_table.format_gpu_table(args.out_dir))
        return 0
    # note: FILE:LABEL for a train note (the label under which train-stats filed the run)
    path, _, label = args.file.partition(':')
    print(gpu_checks.note_line(args.kind, path, label))
    return 0


if __name__ == '__main__':
    sys.exit(main())
