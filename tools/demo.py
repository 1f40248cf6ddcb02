"""Train a RetinaNet with a small SPANet from scratch on generated shapes, on the CPU.

    python tools/demo.py [--work-dir work_dirs/demo] [--iters N] [--seed S] [--quick]
    python tools/demo.py --backbone-only [--arch s] [--image PATH] [--checkpoint PATH]

The main job: writes a COCO-format dataset of circles, squares and triangles
(``spanet_mm.datasets.make_coco_shapes``: 400 training and 50 held-out 128x128 images)
under ``WORK_DIR/data``, trains ``configs/demo/retinanet_spanet_shapes.py`` with
MMEngine's Runner (progress is logged every 10 iterations), evaluates COCO bbox mAP on the
held-out images, saves ground truth | prediction pictures and the checkpoint under
``WORK_DIR`` and prints the mAP. Nothing is downloaded.

``--backbone-only`` instead runs the SPANet backbone on one photograph and prints, per
stage, the feature shape and how much of the query's energy the Spectral Pooling Filter
keeps in the low frequencies.
"""
import argparse
import glob
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
from spanet_mm import SPANet  # noqa: E402

DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'retinanet_spanet_shapes.py')
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='where data, logs, checkpoint and pictures go')
    parser.add_argument('--config', default=DEMO_CONFIG, help='the detector config')
    parser.add_argument('--iters', type=int, help='training iterations (default: config)')
    parser.add_argument('--seed', type=int, default=0, help='seed of data and training')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='held-out images')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 64 training, 16 held-out images, 20 iterations, '
                        'boxes of any score kept so that the barely trained model is scored')
    parser.add_argument('--backbone-only', action='store_true',
                        help='only run the backbone on a photograph (the options below)')
    parser.add_argument('--arch', default='s', help='backbone-only: SPANet arch')
    parser.add_argument('--image', help='backbone-only: an image (default: scikit-image photo)')
    parser.add_argument('--checkpoint', help="backbone-only: the authors' ImageNet weights")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val = 64, 16
        args.iters = args.iters or 20
    for name in ('iters', 'num_train', 'num_val'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive, got {value}')
    return args


def set_iters(cfg, iters: int) -> None:
    """Make the schedule, validation and checkpoint of ``cfg`` fit ``iters`` iterations."""
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    warmup, cosine = cfg.param_scheduler
    warmup.end = min(warmup.end, max(iters // 5, 1))
    cosine.end = iters


def build_config(args: argparse.Namespace, data: dict):
    """The demo config pointed at the generated data and the work dir."""
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    cfg.work_dir = osp.abspath(args.work_dir)
    root = osp.abspath(data['data_root']) + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        evaluator.ann_file = osp.abspath(data['val_ann'])
    set_iters(cfg, args.iters or cfg.train_cfg.max_iters)
    cfg.randomness = dict(seed=args.seed)
    if args.quick:
        # After 20 iterations few scores pass the usual 0.05; CocoMetric would then
        # report nothing at all.
        cfg.model.test_cfg.score_thr = 0.0
    return cfg


def train_detector(args: argparse.Namespace) -> float:
    """Generate the data, train, evaluate; returns the held-out COCO bbox mAP."""
    from mmengine.runner import Runner

    from spanet_mm.datasets import make_coco_shapes

    start = time.perf_counter()
    data = make_coco_shapes(osp.join(args.work_dir, 'data'), num_train=args.num_train,
                            num_val=args.num_val, seed=args.seed)
    runner = Runner.from_cfg(build_config(args, data))
    runner.train()  # validates on the held-out split after the last iteration
    # CocoMetric reports nothing when no box scored above the test threshold.
    key = 'val/coco/bbox_mAP'
    metric = runner.message_hub.get_scalar(key).current() if key in (
        runner.message_hub.log_scalars) else 0.0
    pictures = sorted(glob.glob(osp.join(runner.log_dir, 'vis_data', 'vis_image', '*.png')))
    checkpoints = sorted(glob.glob(osp.join(runner.work_dir, 'iter_*.pth')))
    minutes = (time.perf_counter() - start) / 60
    print(f'\nSPANet RetinaNet, {runner.iter} iterations from scratch in {minutes:.1f} min on '
          f'{torch.get_num_threads()} CPU threads')
    print(f'checkpoint: {checkpoints[-1] if checkpoints else "none"}')
    print(f'predictions (ground truth | prediction): {len(pictures)} images in '
          f'{osp.dirname(pictures[0]) if pictures else "none"}')
    print(f'COCO bbox mAP on {args.num_val} held-out images: {metric:.3f}')
    return metric


def load_image(path=None):
    if path is None:
        import skimage
        path = osp.join(osp.dirname(skimage.__file__), 'data', 'astronaut.png')
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f'demo: cannot read an image from {path!r}')
    return path, image[..., ::-1]  # BGR -> RGB


def low_frequency_share(x, radius=2):
    """Share of spectral energy within ``radius`` of the zero frequency (per image)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1)).abs()**2
    h, w = x.shape[-2:]
    rows = torch.arange(h)[:, None] - h // 2
    cols = torch.arange(w)[None, :] - w // 2
    disk = (rows**2 + cols**2) <= radius**2
    return (spectrum[..., disk].sum() / spectrum.sum()).item()


def backbone_demo(args: argparse.Namespace) -> None:
    """Run the backbone on a photograph and print what each stage computed."""
    path, image = load_image(args.image)
    x = torch.from_numpy(((image - MEAN) / STD).transpose(2, 0, 1).copy()).float()[None]
    model = SPANet(args.arch)
    if args.checkpoint:
        from spanet_mm.checkpoint import load_pretrained
        load_pretrained(model, args.checkpoint)
    model.eval()

    mixers = [stage[0].token_mixer for stage in model.stages]
    shares = {}

    def record(index):
        def hook(module, inputs, output):
            shares[index] = (low_frequency_share(inputs[0]), low_frequency_share(output))
        return hook

    handles = [m.spectral_filter.register_forward_hook(record(i)) for i, m in enumerate(mixers)]
    with torch.no_grad():
        start = time.perf_counter()
        feats = model(x)
        elapsed = time.perf_counter() - start
    for handle in handles:
        handle.remove()

    params = sum(p.numel() for p in model.parameters())
    print(f'SPANet-{args.arch.upper()} ({params / 1e6:.2f}M parameters, '
          f'{"pretrained" if args.checkpoint else "random weights"}) on {path} '
          f'{tuple(x.shape[-2:])}: forward {elapsed * 1000:.0f} ms')
    print(f'{"stage":>5} {"stride":>6} {"features":>22} {"radius":>6} '
          f'{"low-freq energy in -> out of SPF":>34}')
    for i, feat in enumerate(feats):
        before, after = shares[i]
        radius = mixers[i].spectral_filter.radius
        print(f'{i + 1:>5} {x.shape[-1] // feat.shape[-1]:>6} {str(tuple(feat.shape)):>22} '
              f'{radius:>6g} {before:>16.3f} -> {after:.3f}')


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.backbone_only:
        backbone_demo(args)
    else:
        os.makedirs(args.work_dir, exist_ok=True)
        train_detector(args)


if __name__ == '__main__':
    main()
