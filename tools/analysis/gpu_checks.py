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
    # time, data_time and memory of a training run, from MMEngine's scalars log
    python tools/analysis/gpu_checks.py train-stats WORK_DIR --skip 20 --json out.json
    # one line about a result file, for gpu_checks.sh's summary table
    python tools/analysis/gpu_checks.py note fwd out.json

``correctness`` exits with status 1 if any comparison is over its tolerance. With
``--device cpu`` it runs anywhere (CPU against CPU, bfloat16 autocast), to check the script.
"""
import argparse
import copy
import glob
import json
import os
import os.path as osp
import statistics
import sys
import time
from typing import List, Optional

# Let `python tools/analysis/gpu_checks.py` work from a checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from spanet_mm.engine.cli import size_arg  # noqa: E402


def _set_exact_float32() -> None:
    """No TF32 in matrix products or convolutions: float32 on the GPU is IEEE float32."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _relative_error(a, b) -> float:
    """max |a - b| / max |b|, both taken to float32 on the CPU."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# -- smoke ------------------------------------------------------------------------------------

def smoke(args: argparse.Namespace) -> int:
    import torch
    t0 = time.perf_counter()
    import mmcv
    import mmcv.ops  # noqa: F401
    import mmdet
    import mmdet.models  # noqa: F401
    import mmengine
    import mmpretrain
    import mmpretrain.models  # noqa: F401
    import mmseg
    import mmseg.models  # noqa: F401
    import torchvision
    from mmcv.ops import get_compiler_version, get_compiling_cuda_version, nms
    from mmcv.ops import sigmoid_focal_loss

    import spanet_mm
    print(f'imports: {time.perf_counter() - t0:.1f} s')
    print(f'python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}),'
          f' torchvision {torchvision.__version__}, mmengine {mmengine.__version__}, mmcv '
          f'{mmcv.__version__} (ops compiled with CUDA {get_compiling_cuda_version()}, '
          f'{get_compiler_version()}), mmdet {mmdet.__version__}, mmpretrain '
          f'{mmpretrain.__version__}, mmseg {mmseg.__version__}, spanet_mm '
          f'{spanet_mm.__version__}')
    device = torch.device(args.device)
    if device.type == 'cuda':
        print(f'device: {torch.cuda.get_device_name(device)}, capability '
              f'{torch.cuda.get_device_capability(device)}')
    failures = []
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=gen) * 500
    wh = torch.rand(500, 2, generator=gen) * 80 + 4
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(500, generator=gen)
    _, keep = nms(boxes.to(device), scores.to(device), 0.5)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    same = torch.equal(keep.cpu().sort().values, expected.sort().values)
    print(f'mmcv.ops.nms on {device}: kept {keep.numel()} of 500 boxes, '
          f'{"the same as" if same else "DIFFERENT FROM"} torchvision.ops.nms on the CPU')
    if not same:
        failures.append('nms')
    # sigmoid_focal_loss (what RetinaNet's FocalLoss runs on CUDA, unreduced) against
    # mmdet's PyTorch version; mmcv has no CPU kernel for it.
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    logits = torch.randn(300, 80, generator=gen)
    labels = torch.randint(0, 81, (300, ), generator=gen)  # 80 = background
    one_hot = torch.nn.functional.one_hot(labels, 81)[:, :80].float()
    ref_pred = logits.clone().requires_grad_()
    ref = py_sigmoid_focal_loss(ref_pred, one_hot, None, 2.0, 0.25, 'none')
    ref.sum().backward()
    try:
        pred = logits.to(device).requires_grad_()
        loss = sigmoid_focal_loss(pred, labels.to(device), 2.0, 0.25, None, 'none')
        loss.sum().backward()
    except (NotImplementedError, RuntimeError) as error:
        print(f'mmcv.ops.sigmoid_focal_loss on {device}: not available ({error})'[:300])
        if device.type == 'cuda':
            failures.append('sigmoid_focal_loss')
    else:
        loss_err = _relative_error(loss, ref)
        grad_err = _relative_error(pred.grad, ref_pred.grad)
        print(f'mmcv.ops.sigmoid_focal_loss on {device}: sum {float(loss.sum()):.4f} vs '
              f'PyTorch {float(ref.sum()):.4f}; relative error of the losses {loss_err:.1e}, '
              f'of the gradients {grad_err:.1e}')
        if not (loss_err < 1e-4 and grad_err < 1e-4):
            failures.append('sigmoid_focal_loss')
    print('smoke: ' + ('FAILED ' + ', '.join(failures) if failures else 'OK'))
    return 1 if failures else 0


# -- correctness ------------------------------------------------------------------------------

def correctness(args: argparse.Namespace) -> int:
    import torch

    from spanet_mm import SPANet
    from spanet_mm.catalogue import build_backbone
    _set_exact_float32()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    amp_name = str(amp_dtype).replace('torch.', '')
    sizes = args.sizes
    checks = []

    def record(name, size, errors, tol):
        ok = all(e < tol for e in errors) and all(e == e for e in errors)  # NaN fails
        checks.append(dict(check=name, size=f'{size[0]}x{size[1]}', errors=errors,
                           max_error=max(errors), tolerance=tol, ok=ok))
        print(f'{name:<44} {size[0]:>4}x{size[1]:<4} stage errors '
              + ' '.join(f'{e:.1e}' for e in errors)
              + f'  (tol {tol:.0e}) {"ok" if ok else "FAILED"}', flush=True)

    t0 = time.perf_counter()
    # SPANet-S from the catalogue (random init): one copy on the CPU, one on the device.
    cpu_model = build_backbone('spanet:s').eval()
    dev_model = copy.deepcopy(cpu_model).to(device).eval()
    for size in sizes:
        x = torch.randn(args.batch, 3, *size)
        with torch.no_grad():
            expected = cpu_model(x)
            got = dev_model(x.to(device))
            with torch.autocast(device.type, dtype=amp_dtype):
                got_amp = dev_model(x.to(device))
        print(f'  outputs at {size[0]}x{size[1]}: '
              + ', '.join('x'.join(map(str, o.shape)) for o in expected)
              + f'; autocast dtypes: {sorted({str(o.dtype) for o in got_amp})}')
        record(f'spanet:s {device.type} float32 vs cpu float32', size,
               [_relative_error(a, b) for a, b in zip(got, expected)], args.tol_float32)
        finite = all(bool(torch.isfinite(o).all()) for o in got_amp)
        errors = [_relative_error(a, b) for a, b in zip(got_amp, expected)]
        record(f'spanet:s {device.type} {amp_name} autocast vs cpu float32', size,
               errors if finite else [float('nan')] * len(errors), args.tol_amp)
    del cpu_model, dev_model
    # SPANet-S against the paper-literal reference with the same weights, both on the device.
    reference = build_backbone('reference:s')
    model = SPANet('s')
    weights, _ = SPANet.from_release_layout(reference.state_dict())
    model.load_state_dict(weights)
    model, reference = model.to(device).eval(), reference.to(device).eval()
    for size in sizes:
        x = torch.randn(args.batch, 3, *size, device=device)
        with torch.no_grad():
            ours, theirs = model(x), reference(x)
        record(f'spanet:s vs reference:s, {device.type} float32', size,
               [_relative_error(a, b) for a, b in zip(ours, theirs)], args.tol_float32)
    failed = [c for c in checks if not c['ok']]
    print(f'correctness: {len(checks) - len(failed)}/{len(checks)} checks within tolerance '
          f'({time.perf_counter() - t0:.1f} s)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=str(device), torch=torch.__version__,
                           gpu=torch.cuda.get_device_name(device) if device.type == 'cuda'
                           else None, batch=args.batch, checks=checks), f, indent=1)
    return 1 if failed else 0


# -- data and training logs -------------------------------------------------------------------

def make_coco(args: argparse.Namespace) -> int:
    ann = osp.join(args.root, 'annotations', 'instances_train2017.json')
    if args.reuse and osp.exists(ann):
        with open(ann) as f:
            images = json.load(f)['images']
        if len(images) == args.num_train and images[0]['width'] == args.size:
            print(f'reusing {args.num_train} images of {args.size}x{args.size} in {args.root}')
            return 0
    from spanet_mm.datasets.synthetic import make_coco_shapes
    t0 = time.perf_counter()
    out = make_coco_shapes(args.root, num_train=args.num_train, num_val=args.num_val,
                           image_size=args.size, seed=0)
    print(f'generated {args.num_train}+{args.num_val} images of {args.size}x{args.size} in '
          f'{out["data_root"]} ({time.perf_counter() - t0:.1f} s)')
    return 0


def _scalar_lines(work_dir: str) -> List[dict]:
    """The training entries of the newest MMEngine scalars log under ``work_dir``."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')),
                   key=osp.getmtime)
    if not found:  # the LoggerHook's own json log, named after the run's timestamp
        found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', '*.json')),
                       key=osp.getmtime)
    if not found:
        raise FileNotFoundError(f'no vis_data/*.json under {work_dir}')
    with open(found[-1]) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    return [e for e in entries if 'time' in e and 'loss' in e]


def train_stats(args: argparse.Namespace) -> int:
    entries = _scalar_lines(args.work_dir)
    if not entries:
        print(f'train-stats {args.label}: no training entries logged')
        return 1
    step = lambda e: e.get('step', e.get('iter', 0))  # noqa: E731
    kept = [e for e in entries if step(e) > args.skip] or entries[-1:]
    times = [e['time'] for e in kept]
    data_times = [e['data_time'] for e in kept]
    memory = [e['memory'] for e in kept if 'memory' in e]
    stats = dict(label=args.label, iterations=step(entries[-1]),
                 logged_steps=[step(e) for e in kept], skip=args.skip,
                 time_s=statistics.mean(times), data_time_s=statistics.mean(data_times),
                 images_per_s=args.batch / statistics.mean(times) if args.batch else None,
                 memory_mb=max(memory) if memory else None,
                 memory_mb_per_interval=memory,
                 loss_first=entries[0]['loss'], loss_last=entries[-1]['loss'],
                 entries=entries)
    print(f'train-stats {args.label}: iterations {stats["iterations"]}, over steps '
          f'{stats["logged_steps"]} (each the mean of the interval before): time '
          f'{stats["time_s"]:.3f} s/iter, data_time {stats["data_time_s"]:.3f} s/iter, '
          + (f'{stats["images_per_s"]:.1f} img/s, ' if args.batch else '')
          + f'peak memory {stats["memory_mb"]} MB (per interval {memory}), loss '
          f'{stats["loss_first"]:.3f} -> {stats["loss_last"]:.3f}')
    if args.json:
        previous = {}
        if osp.exists(args.json):
            with open(args.json) as f:
                previous = json.load(f)
        previous[args.label] = stats
        with open(args.json, 'w') as f:
            json.dump(previous, f, indent=1)
    return 0


# -- one-line notes for the summary table -------------------------------------------------------

def note(args: argparse.Namespace) -> int:
    """One short line about a step's result file (no torch import: quick)."""
    path, _, label = args.file.partition(':')
    with open(path) as f:
        data = json.load(f)
    if args.kind == 'correctness':
        worst = {}
        for check in data['checks']:
            kind = ('ref' if 'reference' in check['check'] else
                    'amp' if 'autocast' in check['check'] else 'fp32')
            worst[kind] = max(worst.get(kind, 0.0), check['max_error'])
        bad = sum(not c['ok'] for c in data['checks'])
        print(', '.join(f'{k} {v:.1e}' for k, v in worst.items())
              + f' max rel err; {bad} over tol')
    elif args.kind == 'fwd':
        parts = []
        by_name = {r['model']: r for r in data['results']}
        for r in data['results']:
            text = f'{r["model"]} {r["median_ms"]:.1f}ms'
            if r['model'].startswith('spanet:') and 'reference:s' in by_name:
                text += f' ({by_name["reference:s"]["median_ms"] / r["median_ms"]:.2f}x ref)'
            if r.get('peak_mb') is not None:
                text += f' {r["peak_mb"]:.0f}MB'
            parts.append(text)
        print(f'{data["dtype"]}: ' + ', '.join(parts))
    elif args.kind == 'train':
        stats = data[label]
        print(f'{stats["time_s"]:.3f} s/it, data {stats["data_time_s"]:.3f} s/it, '
              f'{stats["memory_mb"]} MB, loss {stats["loss_first"]:.2f}->'
              f'{stats["loss_last"]:.2f}')
    else:
        raise ValueError(f'unknown kind {args.kind!r}')
    return 0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('smoke', help='mmcv ops on the device, versions')
    p.add_argument('--device', default='cuda')
    p.set_defaults(func=smoke)
    p = sub.add_parser('correctness', help='SPANet-S on the device vs CPU and reference')
    p.add_argument('--device', default='cuda', help='cuda (default) or cpu (a dry run)')
    p.add_argument('--sizes', nargs='+', type=size_arg, default=[(224, 224), (333, 517)])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--tol-float32', type=float, default=1e-4,
                   help='max |a-b| / max |b| allowed in float32 (default %(default)s)')
    p.add_argument('--tol-amp', type=float, default=1e-2,
                   help='the same under autocast (float16 on CUDA, bfloat16 on CPU; '
                   'default %(default)s)')
    p.add_argument('--json')
    p.set_defaults(func=correctness)
    p = sub.add_parser('make-coco', help='generated COCO-style shapes')
    p.add_argument('root')
    p.add_argument('--num-train', type=int, default=128)
    p.add_argument('--num-val', type=int, default=4)
    p.add_argument('--size', type=int, default=800)
    p.add_argument('--reuse', action='store_true',
                   help='keep the data in ROOT if it has as many images of this size')
    p.set_defaults(func=make_coco)
    p = sub.add_parser('train-stats', help='time, data_time, memory from a training log')
    p.add_argument('work_dir')
    p.add_argument('--label', default='train')
    p.add_argument('--skip', type=int, default=20,
                   help='leave out the logged steps up to this iteration (warm-up)')
    p.add_argument('--batch', type=int, default=2, help='images per iteration')
    p.add_argument('--json', help='add the stats under LABEL to this json file')
    p.set_defaults(func=train_stats)
    p = sub.add_parser('note', help='one line about a result file, for the summary')
    p.add_argument('kind', choices=['correctness', 'fwd', 'train'])
    p.add_argument('file', help='the json file (train: FILE:LABEL)')
    p.set_defaults(func=note)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
