"""ONNX export of a backbone, a RetinaNet or an ImageNet classifier, with dynamic batch,
height and width, checked with onnxruntime.

What is exported: the network's tensors for a normalised image batch ``input`` of shape
``(N, 3, H, W)``; no data pre-processing and, for detectors, no anchor decoding or NMS.

* ``backbone``: outputs ``feat0..feat3`` (strides 4, 8, 16, 32);
* ``retinanet`` (any MMDetection single-stage detector): its ``mode='tensor'`` path, the
  head's ``cls_score0..4`` and ``bbox_pred0..4`` per FPN level;
* ``classifier`` (an MMPretrain ``ImageClassifier``): ``mode='tensor'``, the logits.

SPANet's Spectral Pooling Filter and SPANetV2's ExSPAM build what depends on the feature size
inside the graph while tracing, so H and W stay symbolic: one file serves every input size.
The TorchScript-based exporter (``dynamo=False``) is used, which needs no extra package.
"""

import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.runner import load_checkpoint

from ..codebases import (
    TensorOutputs,
    build_backbone,
    build_model,
    classifier_config,
    load_config,
    retinanet_config,
)
from ..models.exspam import ExSPAM

KINDS = ('backbone', 'retinanet', 'classifier')


def build_exportable(
    kind: str,
    model: str = 'spanet:s',
    config: Optional[str] = None,
    checkpoint: Optional[str] = None,
    num_classes: int = 1000,
    arch=None,
) -> TensorOutputs:
    """The model to export, in eval mode, returning a flat tuple of tensors.

    Args:
        kind (str): One of :data:`KINDS`.
        model (str): Without ``config``: ``spanet:ARCH`` or ``spanetv2:ARCH``.
        config (str, optional): A config file: its model (for ``backbone``, its
            ``model.backbone``) is exported.
        checkpoint (str, optional): An MMEngine checkpoint of the whole model to load.
        num_classes (int): ``classifier`` without ``config``: number of classes.
        arch (str | dict, optional): Replaces the arch of ``model`` (a custom arch dict).
    """
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    named = (model.partition(':')[0], arch) if arch is not None else model
    if config is not None:
        built = build_model(load_config(config), 'backbone' if kind == 'backbone' else None)
    elif kind == 'backbone':
        built = build_backbone(named)
    else:
        cfg = (
            retinanet_config(named)
            if kind == 'retinanet'
            else classifier_config(named, num_classes)
        )
        built = build_model(cfg)
    if checkpoint:
        load_checkpoint(built, checkpoint, map_location='cpu')
    return TensorOutputs(built).eval()


def output_names(kind: str, num_outputs: int) -> List[str]:
    """Names of the graph's outputs."""
    if kind == 'backbone':
        return [f'feat{i}' for i in range(num_outputs)]
    if kind == 'retinanet':
        levels = num_outputs // 2
        return [f'cls_score{i}' for i in range(levels)] + [f'bbox_pred{i}' for i in range(levels)]
    return ['logits'] if num_outputs == 1 else [f'logits{i}' for i in range(num_outputs)]


def _check_exportable(model: torch.nn.Module) -> None:
    """Refuse, with a clear message, what the TorchScript exporter cannot export (it would
    fail deep inside the graph passes)."""
    found = [name for name, m in model.named_modules() if isinstance(m, ExSPAM)]
    if found:
        raise NotImplementedError(
            f'{len(found)} ExSPAM layers (SPANetV2, e.g. {found[0]}) compute their spectral '
            'gain with torch.fft.rfft2/irfft2, which the TorchScript ONNX exporter (opset 17) '
            'cannot export; export SPANet, or trace SPANetV2 with torch.jit.trace instead'
        )


def export_onnx(
    wrapper: TensorOutputs,
    kind: str,
    path: str,
    shape: Sequence[int],
    batch: int = 1,
    opset: int = 17,
) -> List[str]:
    """Export ``wrapper`` to ``path`` with dynamic batch, height and width.

    Returns:
        list[str]: The output names.
    """
    _check_exportable(wrapper)
    x = torch.randn(batch, 3, *shape)
    with torch.no_grad():
        names = output_names(kind, len(wrapper(x)))
    dynamic = {0: 'batch', 2: 'height', 3: 'width'}
    with warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks do not affect the graph.
        warnings.simplefilter('ignore')
        torch.onnx.export(
            wrapper,
            (x,),
            path,
            input_names=['input'],
            output_names=names,
            dynamic_axes={name: dynamic for name in ['input'] + names},
            opset_version=opset,
            dynamo=False,
        )
    return names


def verify_onnx(
    wrapper: TensorOutputs, path: str, shapes: Sequence[Sequence[int]], batch: int = 1
) -> List[Tuple[Tuple[int, int], float]]:
    """Largest absolute difference between onnxruntime (CPU) and PyTorch at each shape.

    Raises:
        AssertionError: The file gives another number or shape of outputs than PyTorch.
    """
    # The runtimes are optional (the [deploy] extra): imported when a file is checked.
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
            raise AssertionError(f'onnxruntime gave {len(got)} outputs, PyTorch {len(expected)}')
        worst = 0.0
        for ours, theirs in zip(got, expected):
            if tuple(ours.shape) != tuple(theirs.shape):
                raise AssertionError(
                    f'at {height}x{width}: onnxruntime output shape '
                    f'{ours.shape}, PyTorch {tuple(theirs.shape)}'
                )
            worst = max(worst, (torch.from_numpy(ours) - theirs).abs().max().item())
        report.append(((height, width), worst))
    return report


def default_check_shapes(shape: Sequence[int]) -> List[Tuple[int, int]]:
    """Two sizes other than the export size (one larger, one odd), to check a file at."""
    height, width = shape
    return [(height + 32, width - 32), (height * 3 // 2 + 7, width + 45)]


def export_and_verify(
    kind: str,
    out: str,
    model: str = 'spanet:s',
    config: Optional[str] = None,
    checkpoint: Optional[str] = None,
    num_classes: int = 1000,
    shape: Sequence[int] = (224, 224),
    opset: int = 17,
    verify: bool = False,
    verify_shapes: Optional[Sequence[Sequence[int]]] = None,
    atol: float = 1e-4,
    log=print,
) -> bool:
    """What ``tools/deployment/export_onnx.py`` does: build, export and, with ``verify``,
    compare onnxruntime with PyTorch at ``verify_shapes`` (default
    :func:`default_check_shapes`). Returns whether every check passed."""
    wrapper = build_exportable(kind, model, config, checkpoint, num_classes)
    names = export_onnx(wrapper, kind, out, shape, opset=opset)
    log(f'wrote {out}: input (batch, 3, height, width) -> {", ".join(names)}')
    if not verify:
        return True
    passed = True
    for (h, w), diff in verify_onnx(wrapper, out, verify_shapes or default_check_shapes(shape)):
        ok = diff <= atol
        passed &= ok
        log(
            f'  {h}x{w}: max |onnxruntime - PyTorch| = {diff:.2e} '
            f'{"ok" if ok else f"> {atol:g} FAILED"}'
        )
    return passed
