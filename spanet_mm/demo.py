"""The main job of ``tools/demo.py``: train a RetinaNet with a small SPANet from scratch on
generated shapes, on the CPU; and a look at what a backbone's stages compute on a photograph.

:func:`train_detector` writes a COCO-format dataset of circles, squares and triangles
(:func:`spanet_mm.datasets.make_coco_shapes`) under ``WORK_DIR/data``, trains the demo
config (``configs/demo/retinanet_spanet_shapes.py``) with MMEngine's Runner, evaluates COCO
bbox mAP on the held-out images and saves ground truth | prediction pictures and the
checkpoint under ``WORK_DIR``. Nothing is downloaded.

:func:`backbone_demo` runs a SPANet backbone on one photograph and prints, per stage, the
feature shape and how much of the query's energy the Spectral Pooling Filter keeps in the
low frequencies.
"""
import glob
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from mmengine.config import Config
from torch import Tensor

# The held-out metric the demo reports.
METRIC = 'val/coco/bbox_mAP'


@dataclass
class DemoSettings:
    """What :func:`train_detector` runs.

    Attributes:
        config (str): The detector config.
        work_dir (str): Where data, logs, checkpoint and pictures go.
        iters (int, optional): Training iterations (default: the config's).
        seed (int): Seed of data and training.
        num_train, num_val (int): Generated training and held-out images.
        keep_all_scores (bool): Score every box, however low (a barely trained model's
            scores rarely pass the usual 0.05, and CocoMetric then reports nothing).
    """
    config: str
    work_dir: str = 'work_dirs/demo'
    iters: Optional[int] = None
    seed: int = 0
    num_train: int = 400
    num_val: int = 50
    keep_all_scores: bool = False


def set_iters(cfg: Config, iters: int) -> None:
    """Make the schedule, validation and checkpoint of ``cfg`` fit ``iters`` iterations."""
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    warmup, cosine = cfg.param_scheduler
    warmup.end = min(warmup.end, max(iters // 5, 1))
    cosine.end = iters


def demo_config(settings: DemoSettings, data: dict) -> Config:
    """The demo config pointed at the generated data and the work dir."""
    from .codebases import load_config
    cfg = load_config(settings.config)
    cfg.work_dir = osp.abspath(settings.work_dir)
    root = osp.abspath(data['data_root']) + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        evaluator.ann_file = osp.abspath(data['val_ann'])
    set_iters(cfg, settings.iters or cfg.train_cfg.max_iters)
    cfg.randomness = dict(seed=settings.seed)
    if settings.keep_all_scores:
        cfg.model.test_cfg.score_thr = 0.0
    return cfg


def train_detector(settings: DemoSettings, log: Callable[[str], None] = print) -> float:
    """Generate the data, train, evaluate; returns the held-out COCO bbox mAP (0 when no
    box was scored)."""
    from mmengine.runner import Runner

    from .codebases import codebase_of, register_codebase
    from .datasets import make_coco_shapes

    start = time.perf_counter()
    os.makedirs(settings.work_dir, exist_ok=True)
    data = make_coco_shapes(osp.join(settings.work_dir, 'data'), num_train=settings.num_train,
                            num_val=settings.num_val, seed=settings.seed)
    cfg = demo_config(settings, data)
    register_codebase(codebase_of(cfg))
    runner = Runner.from_cfg(cfg)
    runner.train()  # validates on the held-out split after the last iteration
    # CocoMetric reports nothing when no box scored above the test threshold.
    scalars = runner.message_hub.log_scalars
    metric = scalars[METRIC].current() if METRIC in scalars else 0.0
    pictures = sorted(glob.glob(osp.join(runner.log_dir, 'vis_data', 'vis_image', '*.png')))
    checkpoints = sorted(glob.glob(osp.join(runner.work_dir, 'iter_*.pth')))
    minutes = (time.perf_counter() - start) / 60
    log(f'\nSPANet RetinaNet, {runner.iter} iterations from scratch in {minutes:.1f} min on '
        f'{torch.get_num_threads()} CPU threads')
    log(f'checkpoint: {checkpoints[-1] if checkpoints else "none"}')
    log(f'predictions (ground truth | prediction): {len(pictures)} images in '
        f'{osp.dirname(pictures[0]) if pictures else "none"}')
    log(f'COCO bbox mAP on {settings.num_val} held-out images: {metric:.3f}')
    return metric


def low_frequency_share(x: Tensor, radius: float = 2) -> float:
    """Share of the spectral energy of ``x`` (``(..., H, W)``) within ``radius`` of the zero
    frequency."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1)).abs()**2
    h, w = x.shape[-2:]
    rows = torch.arange(h)[:, None] - h // 2
    cols = torch.arange(w)[None, :] - w // 2
    disk = (rows**2 + cols**2) <= radius**2
    return (spectrum[..., disk].sum() / spectrum.sum()).item()


def backbone_demo(model: str = 'spanet:s', image: Optional[str] = None,
                  checkpoint: Optional[str] = None,
                  log: Callable[[str], None] = print) -> Dict[int, Tuple[float, float]]:
    """Run a SPANet backbone on a photograph (default: scikit-image's astronaut) and print
    what each stage computed.

    Returns:
        dict: stage -> (low-frequency energy share of the first filter's input, of its output).
    """
    from .catalogue import build_backbone
    from .images import read_rgb, skimage_photos, to_model_input
    if not model.startswith('spanet:'):
        raise ValueError(f'the backbone demo shows the Spectral Pooling Filter of spanet:ARCH, '
                         f'got {model!r}')
    path = image or skimage_photos()[0]
    x = to_model_input(read_rgb(path), size=None)
    backbone = build_backbone(model, checkpoint=checkpoint)
    mixers = [stage[0].token_mixer for stage in backbone.stages]
    shares: Dict[int, Tuple[float, float]] = {}

    def record(index):
        def hook(module, inputs, output):
            shares[index] = (low_frequency_share(inputs[0]), low_frequency_share(output))
        return hook

    handles = [m.spectral_filter.register_forward_hook(record(i)) for i, m in enumerate(mixers)]
    try:
        with torch.no_grad():
            start = time.perf_counter()
            feats = backbone(x)
            elapsed = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()

    params = sum(p.numel() for p in backbone.parameters())
    log(f'{model} ({params / 1e6:.2f}M parameters, '
        f'{"pretrained" if checkpoint else "random weights"}) on {path} '
        f'{tuple(x.shape[-2:])}: forward {elapsed * 1000:.0f} ms')
    log(f'{"stage":>5} {"stride":>6} {"features":>22} {"radius":>6} '
        f'{"low-freq energy in -> out of SPF":>34}')
    for i, feat in enumerate(feats):
        before, after = shares[i]
        radius = mixers[i].spectral_filter.radius
        log(f'{i + 1:>5} {x.shape[-1] // feat.shape[-1]:>6} {str(tuple(feat.shape)):>22} '
            f'{radius:>6g} {before:>16.3f} -> {after:.3f}')
    return shares
