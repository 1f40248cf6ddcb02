"""Export a SPANet backbone, a RetinaNet or an ImageNet classifier to ONNX, with dynamic
batch, height and width, and check it with onnxruntime.

Examples::

    # the bare backbone (four GroupNorm'ed stage features)
    python tools/deployment/export_onnx.py backbone --arch s --out spanet_s.onnx --verify
    # a whole RetinaNet: MMDetection's retinanet_r50_fpn_1x_coco with a SPANet backbone
    python tools/deployment/export_onnx.py retinanet --arch s --out retinanet_spanet_s.onnx \\
        --shape 512 512 --verify
    # or any detector / classifier config (the model is exported without post-processing)
    python tools/deployment/export_onnx.py retinanet \\
        --config configs/mmdet/retinanet_spanet_s_1x.py \\
        --checkpoint work_dirs/retinanet/epoch_12.pth --out retinanet.onnx --verify
    python tools/deployment/export_onnx.py classifier --arch s --out spanet_s_cls.onnx --verify

What is exported: the network's tensors for a normalised image batch ``input`` of shape
``(N, 3, H, W)``; no data pre-processing and, for detectors, no anchor decoding or NMS.

* ``backbone``: outputs ``feat0..feat3`` (strides 4, 8, 16, 32);
* ``retinanet`` (any MMDetection single-stage detector): ``model._forward``, i.e. the
  head's ``cls_score0..4`` and ``bbox_pred0..4`` per FPN level;
* ``classifier`` (an MMPretrain ``ImageClassifier``): ``mode='tensor'``, the logits.

The Spectral Pooling Filter builds its operators from the feature size; while tracing it
builds them inside the graph, so H and W stay symbolic: one file serves every input size.
``--verify`` runs the file with onnxruntime (CPU) at ``--verify-shapes`` (by default two sizes
other than the export size) and compares with PyTorch; it fails if any output differs by
more than ``--atol``.

Uses the TorchScript-based exporter (``dynamo=False``), which needs no extra package.
"""
import argparse
import os.path as osp
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

KINDS = ('backbone', 'retinanet', 'classifier')
RETINANET_BASE = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


class TensorOutputs(nn.Module):
    """Runs a backbone or an OpenMMLab model and returns a flat tuple of its tensors."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if self.kind == 'backbone':
            return tuple(self.model(x))
        if self.kind == 'retinanet':
            cls_scores, bbox_preds = self.model._forward(x)
            return tuple(cls_scores) + tuple(bbox_preds)
        return (self.model(x, mode='tensor'), )

    def output_names(self, num_outputs: int) -> List[str]:
        if self.kind == 'backbone':
            return [f'feat{i}' for i in range(num_outputs)]
        if self.kind == 'retinanet':
            levels = num_outputs // 2
            return ([f'cls_score{i}' for i in range(levels)]
                    + [f'bbox_pred{i}' for i in range(levels)])
        return ['logits']


# -- building ---------------------------------------------------------------------------------

def retinanet_config(arch: str):
    """MMDetection's RetinaNet R50-FPN 1x with a SPANet backbone (strides 8, 16, 32)."""
    from mmengine.hub import get_config

    from spanet_mm import SPANet
    cfg = get_config(RETINANET_BASE)  # reads the config shipped inside the mmdet package
    dims = SPANet.resolve_arch(arch)['embed_dims']
    cfg.model.backbone = dict(type='SPANet', arch=arch, out_indices=(1, 2, 3))
    cfg.model.neck.in_channels = list(dims[1:])
    return cfg


def build(kind: str, arch: str = 's', config: Optional[str] = None,
          checkpoint: Optional[str] = None, num_classes: int = 1000) -> TensorOutputs:
    """The model to export, in eval mode, wrapped to return a tuple of tensors."""
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    from spanet_mm.analysis.common import (build_from_config, classifier_config,
                                           load_config)
    if kind == 'backbone':
        model = _build_backbone(arch, config)
    else:
        if config is not None:
            cfg = load_config(config)
        elif kind == 'retinanet':
            cfg = retinanet_config(arch)
        else:
            cfg = classifier_config(arch, num_classes)
        if cfg.model.get('backbone', {}).get('init_cfg'):
            cfg.model.backbone.init_cfg = None  # no download; weights come from --checkpoint
        model = build_from_config(cfg)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return TensorOutputs(model, kind).eval()


def _build_backbone(arch: str, config: Optional[str]) -> nn.Module:
    from spanet_mm import SPANet
    if config is None:
        return SPANet(arch)
    from mmengine.registry import MODELS

    from spanet_mm.analysis.common import load_config
    backbone = dict(load_config(config).model.backbone)
    backbone.pop('init_cfg', None)
    return MODELS.build(backbone)


# -- export and check ---------------------------------------------------------------------

def export(wrapper: TensorOutputs, path: str, shape: Sequence[int], batch: int = 1,
           opset: int = 17) -> List[str]:
    """Export ``wrapper`` to ``path`` with dynamic batch, height and width.

    Returns:
        list[str]: The output names.
    """
    x = torch.randn(batch, 3, *shape)
    with torch.no_grad():
        names = wrapper.output_names(len(wrapper(x)))
    dynamic = {0: 'batch', 2: 'height', 3: 'width'}
    with warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks do not affect the graph.
        warnings.simplefilter('ignore')
        torch.onnx.export(
            wrapper, (x, ), path, input_names=['input'], output_names=names,
            dynamic_axes={name: dynamic for name in ['input'] + names},
            opset_version=opset, dynamo=False)
    return names


def verify(wrapper: TensorOutputs, path: str, shapes: Sequence[Sequence[int]],
           batch: int = 1) -> List[Tuple[Tuple[int, int], float]]:
    """Largest absolute difference between onnxruntime (CPU) and PyTorch at each shape."""
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(path)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    report = []
    for height, width in shapes:
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = wrapper(x)
        got = session.run(None, {'input': x.numpy()})
        if len(got) != len(expected):
            raise AssertionError(f'onnxruntime gave {len(got)} outputs, PyTorch '
                                 f'{len(expected)}')
        worst = 0.0
        for ours, theirs in zip(got, expected):
            if tuple(ours.shape) != tuple(theirs.shape):
                raise AssertionError(f'at {height}x{width}: onnxruntime output shape '
                                     f'{ours.shape}, PyTorch {tuple(theirs.shape)}')
            worst = max(worst, (torch.from_numpy(ours) - theirs).abs().max().item())
        report.append(((height, width), worst))
    return report


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kind', choices=KINDS)
    parser.add_argument('--arch', default='s', help='SPANet arch without --config '
                        '(default: s)')
    parser.add_argument('--config', help='a config file: its model (or, for backbone, its '
                        'model.backbone) is exported')
    parser.add_argument('--checkpoint', help='weights to load (an MMEngine checkpoint of '
                        'the whole model)')
    parser.add_argument('--num-classes', type=int, default=1000,
                        help='classifier without --config: number of classes')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'), help='input size used for tracing')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch at --verify-shapes')
    parser.add_argument('--verify-shapes', nargs='+', default=None, metavar='HxW',
                        help='sizes to check (default: two sizes other than --shape)')
    parser.add_argument('--atol', type=float, default=1e-4)
    return parser.parse_args(argv)


def _parse_shape(text: str) -> Tuple[int, int]:
    parts = text.lower().split('x')
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f'expected a size like 320x256, got {text!r}')
    return int(parts[0]), int(parts[1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    wrapper = build(args.kind, args.arch, args.config, args.checkpoint, args.num_classes)
    names = export(wrapper, args.out, args.shape, opset=args.opset)
    print(f'wrote {args.out}: input (batch, 3, height, width) -> {", ".join(names)}')
    if not args.verify:
        return 0
    height, width = args.shape
    shapes = ([_parse_shape(s) for s in args.verify_shapes] if args.verify_shapes else
              [(height + 32, width - 32), (height * 3 // 2 + 7, width + 45)])
    failed = False
    for (h, w), diff in verify(wrapper, args.out, shapes):
        ok = diff <= args.atol
        failed |= not ok
        print(f'  {h}x{w}: max |onnxruntime - PyTorch| = {diff:.2e} '
              f'{"ok" if ok else f"> {args.atol:g} FAILED"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    sys.exit(main())
