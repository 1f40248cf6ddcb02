"""The main job of ``tools/demo.py``: train a RetinaNet with a small SPANet from scratch on
generated shapes, on the CPU; and a look at what a backbone's stages compute on a photograph.

:func:`train_detector` writes a COCO-format dataset of circles, squares and triangles
(:func:`spanet_mm.datasets.make_coco_shapes`, categories named after the shapes) under
``WORK_DIR/data``, trains the demo config (``configs/demo/retinanet_spanet_shapes.py``) with
MMEngine's Runner, evaluates COCO bbox mAP on the held-out images and saves, under
``WORK_DIR``, the checkpoint, ground truth | prediction pictures of the first held-out images
drawn at four times their size (``predictions/*.png``, :func:`save_pictures`) and one
summary picture (``summary.png``, :func:`save_summary`): the training loss curve, the
held-out mAP and the first of those pictures. Nothing is downloaded.

:func:`backbone_demo` runs a SPANet backbone on one photograph and prints, per stage, the
feature shape and how much of the query's energy the Spectral Pooling Filter keeps in the
low frequencies.
"""

import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from torch import Tensor

from spanet_mm.codebases import codebase_of, load_config, register_codebase
from spanet_mm.datasets import make_coco_shapes

from .catalogue import build_backbone
from .images import read_rgb, skimage_photos, to_model_input

# The held-out metrics the demo reports: COCO mAP over IoU 0.50:0.95, and at IoU 0.5.
METRIC = 'val/coco/bbox_mAP'
METRIC_50 = 'val/coco/bbox_mAP_50'
# Box and label colours (BGR) of labels 0, 1, 2 (circle, square, triangle), then cycled.
COLOURS = ((255, 160, 0), (40, 200, 40), (60, 60, 255), (200, 0, 200), (0, 200, 255))
FONT = cv2.FONT_HERSHEY_SIMPLEX
# What the summary's legend calls RetinaNet's losses.
LOSS_NAMES = {
    'loss': 'loss = loss_cls + loss_bbox',
    'loss_cls': 'loss_cls: focal loss of the classes',
    'loss_bbox': 'loss_bbox: GIoU loss of the boxes',
}
# Height of the white band above each panel that says what the panel shows.
HEADER = 40
# Space between the ground truth and the prediction panels.
GAP = 8


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
        num_pictures (int): Held-out images drawn as ground truth | prediction pictures.
        picture_scale (int): How many times larger than the images the pictures are drawn.
        score_thr (float): Predicted boxes scored below this are not drawn.
    """

    config: str
    work_dir: str = 'work_dirs/demo'
    iters: Optional[int] = None
    seed: int = 0
    num_train: int = 400
    num_val: int = 50
    keep_all_scores: bool = False
    num_pictures: int = 4
    picture_scale: int = 4
    score_thr: float = 0.3


def set_iters(cfg: Config, iters: int) -> None:
    """Make the schedule, validation and checkpoint of ``cfg`` fit ``iters`` iterations."""
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    warmup, cosine = cfg.param_scheduler
    warmup.end = min(warmup.end, max(iters // 5, 1))
    cosine.end = iters


def demo_config(settings: DemoSettings, data: dict) -> Config:
    """The demo config pointed at the generated data and the work dir.

    Raises:
        ValueError: If the config's datasets do not select the generated data's classes
            (``metainfo=dict(classes=...)``), which would leave them without annotations.
    """
    cfg = load_config(settings.config)
    classes = tuple(cfg.train_dataloader.dataset.get('metainfo', {}).get('classes', ()))
    if classes != tuple(data['classes']):
        raise ValueError(
            f'{settings.config} must train on the generated classes {data["classes"]} '
            f'(metainfo of its datasets), got {classes or "none"}'
        )
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
    """Generate the data, train, evaluate, draw; returns the held-out COCO bbox mAP (0 when
    no box was scored).

    Writes under ``settings.work_dir``: ``data/`` (the dataset), the Runner's logs and
    checkpoint, ``predictions/*.png`` (:func:`save_pictures`) and ``summary.png``
    (:func:`save_summary`).
    """
    start = time.perf_counter()
    os.makedirs(settings.work_dir, exist_ok=True)
    data = make_coco_shapes(
        osp.join(settings.work_dir, 'data'),
        num_train=settings.num_train,
        num_val=settings.num_val,
        seed=settings.seed,
        categories='shapes',
    )
    cfg = demo_config(settings, data)
    register_codebase(codebase_of(cfg))
    runner = Runner.from_cfg(cfg)
    runner.train()  # validates on the held-out split after the last iteration
    # CocoMetric reports nothing when no box scored above the test threshold.
    scalars = runner.message_hub.log_scalars
    metric = scalars[METRIC].current() if METRIC in scalars else 0.0
    metric_50 = scalars[METRIC_50].current() if METRIC_50 in scalars else 0.0
    checkpoint = osp.join(runner.work_dir, f'iter_{runner.iter}.pth')
    pictures = save_pictures(
        runner.model,
        runner.val_loop.dataloader.dataset,
        osp.join(runner.work_dir, 'predictions'),
        num=settings.num_pictures,
        scale=settings.picture_scale,
        score_thr=settings.score_thr,
    )
    losses = {
        key[len('train/') :]: runner.message_hub.get_scalar(key).data[0]
        for key in scalars
        if key.startswith('train/loss')
    }
    summary = save_summary(
        osp.join(runner.work_dir, 'summary.png'),
        losses,
        metric,
        metric_50,
        num_val=settings.num_val,
        picture=pictures[0] if pictures else None,
        title=f'SPANet RetinaNet trained from scratch on generated shapes '
        f'({runner.iter} iterations, batches of {cfg.train_dataloader.batch_size} images)',
    )
    minutes = (time.perf_counter() - start) / 60
    log(
        f'\nSPANet RetinaNet, {runner.iter} iterations from scratch in {minutes:.1f} min on '
        f'{torch.get_num_threads()} CPU threads'
    )
    log(f'checkpoint: {checkpoint if osp.isfile(checkpoint) else "none"}')
    log(
        f'pictures (ground truth | prediction, {settings.picture_scale}x): {len(pictures)} '
        f'images in {osp.dirname(pictures[0]) if pictures else "none"}'
    )
    log(f'summary (training loss, held-out mAP): {summary}')
    log(
        f'COCO bbox mAP on {settings.num_val} held-out images: {metric:.3f} '
        f'(mAP@0.5: {metric_50:.3f})'
    )
    return metric


def draw_panel(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    classes: Sequence[str],
    title: str,
    scale: int = 4,
    scores: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """One panel: ``image`` enlarged ``scale`` times with its boxes and labels drawn at that
    size, under a white band with ``title``.

    Args:
        image (np.ndarray): A BGR uint8 image (H, W, 3).
        boxes (np.ndarray): Boxes (N, 4) ``[x1, y1, x2, y2]`` in ``image``'s pixels.
        labels (Sequence[int]): Their class indices into ``classes``.
        classes (Sequence[str]): The class names.
        title (str): What the panel shows.
        scale (int): The enlargement.
        scores (Sequence[float], optional): Scores written after the class names.

    Returns:
        np.ndarray: The BGR uint8 panel, ``(HEADER + scale * H, scale * W, 3)``.
    """
    # Nearest-neighbour enlargement shows the very pixels the model saw.
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    height, width = big.shape[:2]
    for index, (box, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels)):
        colour = COLOURS[int(label) % len(COLOURS)]
        x1, y1, x2, y2 = (int(v) for v in np.round(box * scale))
        # A dark rim keeps the box visible on shapes of any colour.
        cv2.rectangle(big, (x1, y1), (x2, y2), (0, 0, 0), 4)
        cv2.rectangle(big, (x1, y1), (x2, y2), colour, 2)
        text = classes[int(label)]
        if scores is not None:
            text += f' {scores[index]:.2f}'
        (tw, th), base = cv2.getTextSize(text, FONT, 0.6, 1)
        # The label sits above the box, or inside it when the box touches the top.
        top = y1 - th - base - 4 if y1 - th - base - 4 >= 0 else y1
        left = min(max(x1, 0), max(width - tw - 6, 0))
        cv2.rectangle(big, (left, top), (left + tw + 6, top + th + base + 4), colour, -1)
        cv2.putText(big, text, (left + 3, top + th + 2), FONT, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    header = np.full((HEADER, width, 3), 255, np.uint8)
    cv2.putText(header, title, (8, HEADER - 13), FONT, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, big], 0)


@torch.no_grad()
def save_pictures(
    model: torch.nn.Module,
    dataset,
    out_dir: str,
    num: int = 4,
    scale: int = 4,
    score_thr: float = 0.3,
) -> List[str]:
    """Draw ground truth | prediction of the first ``num`` images of ``dataset``, enlarged.

    Args:
        model (torch.nn.Module): A trained MMDetection detector.
        dataset: Its test-mode MMDetection dataset; ``dataset.metainfo['classes']`` names
            the labels.
        out_dir (str): Where the pictures go (created if missing), one ``STEM.png`` per
            image, ``STEM`` being the image file's.
        num (int): How many images are drawn.
        scale (int): How many times larger than the images the pictures are.
        score_thr (float): Predicted boxes scored below this are not drawn.

    Returns:
        list[str]: Paths of the pictures, each ``HEADER + scale * H`` pixels tall and
        ``2 * scale * W + GAP`` wide.
    """
    classes = dataset.metainfo['classes']
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    paths = []
    for index in range(min(num, len(dataset))):
        info = dataset.get_data_info(index)
        image = cv2.imread(info['img_path'])
        gt = [i for i in info['instances'] if not i.get('ignore_flag', 0)]
        gt_boxes = np.array([i['bbox'] for i in gt], np.float32).reshape(-1, 4)
        ground_truth = draw_panel(
            image,
            gt_boxes,
            [i['bbox_label'] for i in gt],
            classes,
            f'ground truth: {_count(len(gt), "shape")}',
            scale,
        )
        # test_step rescales the boxes to the image's original size.
        pred = model.test_step(pseudo_collate([dataset[index]]))[0].pred_instances
        pred = pred[pred.scores >= score_thr]
        # Lowest score first: where boxes of several classes overlap, the label drawn last,
        # on top, is the model's best guess.
        pred = pred[pred.scores.argsort()]
        prediction = draw_panel(
            image,
            pred.bboxes.cpu().numpy(),
            pred.labels.tolist(),
            classes,
            f'prediction: {_count(len(pred), "box")} scored >= {score_thr:.2f}',
            scale,
            pred.scores.tolist(),
        )
        gap = np.full((ground_truth.shape[0], GAP, 3), 255, np.uint8)
        path = osp.join(out_dir, osp.splitext(osp.basename(info['img_path']))[0] + '.png')
        cv2.imwrite(path, np.concatenate([ground_truth, gap, prediction], 1))
        paths.append(path)
    return paths


def _count(number: int, noun: str) -> str:
    """``'NUMBER NOUN'``, the noun plural unless there is one."""
    return f'{number} {noun}' + ('' if number == 1 else 'es' if noun.endswith('x') else 's')


def moving_average(values: np.ndarray, window: int = 10) -> np.ndarray:
    """The mean of each value and up to ``window - 1`` before it."""
    sums = np.cumsum(np.concatenate([[0.0], np.asarray(values, np.float64)]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def save_summary(
    path: str,
    losses: Dict[str, np.ndarray],
    metric: float,
    metric_50: float,
    num_val: int,
    picture: Optional[str] = None,
    title: str = 'SPANet RetinaNet trained from scratch on generated shapes',
) -> str:
    """One picture of the run: the training losses by iteration, the held-out mAP written
    on them and, below, one ground truth | prediction picture.

    Args:
        path (str): The PNG to write.
        losses (dict[str, np.ndarray]): Per-iteration values of ``loss`` (the total) and
            of its terms (``loss_cls``, ``loss_bbox``), as the message hub recorded them.
        metric (float): Held-out COCO bbox mAP (IoU 0.50:0.95).
        metric_50 (float): Held-out COCO bbox mAP at IoU 0.5.
        num_val (int): The number of held-out images.
        picture (str, optional): A picture of :func:`save_pictures` to show below.
        title (str): The figure's title.

    Returns:
        str: ``path``.
    """
    # The object-oriented API, without pyplot, needs no display and leaves matplotlib's
    # global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 9.5 if picture else 5), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=13)
    if picture:
        ax, ax_pic = fig.subplots(2, 1, height_ratios=[1, 1.1])
    else:
        ax, ax_pic = fig.subplots(1, 1), None
    for index, (name, values) in enumerate(sorted(losses.items())):
        steps = np.arange(1, len(values) + 1)
        colour = f'C{index}'
        if name == 'loss':
            ax.plot(
                steps, values, color=colour, alpha=0.3, linewidth=0.8, label='loss, each iteration'
            )
        ax.plot(
            steps,
            moving_average(values),
            color=colour,
            linewidth=2.2 if name == 'loss' else 1.4,
            label=LOSS_NAMES.get(name, name),
        )
    ax.set_xlabel('training iteration')
    # From scratch the first iterations' losses are orders of magnitude above the last.
    ax.set_yscale('log')
    ax.set_ylabel('training loss (log scale)')
    ax.set_title('Training loss (lower is better), means of 10 iterations')
    ax.grid(alpha=0.3)
    if losses:
        ax.legend(loc='upper center')
    ax.text(
        0.98,
        0.95,
        f'Held-out COCO bbox mAP: {metric:.3f}\n'
        f'(IoU 0.50:0.95; at IoU 0.5: {metric_50:.3f})\n'
        f'on {num_val} images not trained on',
        transform=ax.transAxes,
        ha='right',
        va='top',
        fontsize=12,
        bbox=dict(boxstyle='round', facecolor='white', edgecolor='0.6'),
    )
    if ax_pic is not None:
        ax_pic.imshow(cv2.imread(picture)[..., ::-1])
        ax_pic.set_title(f'A held-out image ({osp.basename(picture)}): ground truth | prediction')
        ax_pic.axis('off')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def low_frequency_share(x: Tensor, radius: float = 2) -> float:
    """Share of the spectral energy of ``x`` (``(..., H, W)``) within ``radius`` of the zero
    frequency."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1)).abs() ** 2
    h, w = x.shape[-2:]
    rows = torch.arange(h)[:, None] - h // 2
    cols = torch.arange(w)[None, :] - w // 2
    disk = (rows**2 + cols**2) <= radius**2
    return (spectrum[..., disk].sum() / spectrum.sum()).item()


def backbone_demo(
    model: str = 'spanet:s',
    image: Optional[str] = None,
    checkpoint: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> Dict[int, Tuple[float, float]]:
    """Run a SPANet backbone on a photograph (default: scikit-image's astronaut) and print
    what each stage computed.

    Returns:
        dict: stage -> (low-frequency energy share of the first filter's input, of its output).
    """
    if not model.startswith('spanet:'):
        raise ValueError(
            f'the backbone demo shows the Spectral Pooling Filter of spanet:ARCH, got {model!r}'
        )
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
    log(
        f'{model} ({params / 1e6:.2f}M parameters, '
        f'{"pretrained" if checkpoint else "random weights"}) on {path} '
        f'{tuple(x.shape[-2:])}: forward {elapsed * 1000:.0f} ms'
    )
    log(
        f'{"stage":>5} {"stride":>6} {"features":>22} {"radius":>6} '
        f'{"low-freq energy in -> out of SPF":>34}'
    )
    for i, feat in enumerate(feats):
        before, after = shares[i]
        radius = mixers[i].spectral_filter.radius
        log(
            f'{i + 1:>5} {x.shape[-1] // feat.shape[-1]:>6} {str(tuple(feat.shape)):>22} '
            f'{radius:>6g} {before:>16.3f} -> {after:.3f}'
        )
    return shares
