"""ONNX export of both SPANet generations, alone or inside a classifier, detector or
segmentor, with dynamic batch, height and width, checked in ONNX Runtime and OpenVINO.

What is exported: the network's tensors for a normalised image batch ``input`` of shape
``(N, 3, H, W)``; no data pre-processing and no post-processing (anchor decoding, NMS,
resizing of segmentation logits to the image):

* ``backbone``: ``feat0..feat3`` (strides 4, 8, 16, 32);
* ``classifier`` (an MMPretrain ``ImageClassifier``): ``mode='tensor'``, ``logits``;
* ``retinanet`` (any MMDetection single-stage detector): its ``mode='tensor'`` path, the
  head's ``cls_score0..4`` and ``bbox_pred0..4`` per FPN level;
* ``segmentor`` (an MMSegmentation ``EncoderDecoder``, e.g. Semantic FPN or UperNet):
  ``mode='tensor'``, ``seg_logits`` at the decode head's resolution;
* ``backbone-neck`` (two-stage detectors: Mask R-CNN, Cascade Mask R-CNN): the backbone and
  the neck, ``neck0..neck4``; their RoI heads need mmcv's compiled ops (RoIAlign, NMS),
  which ONNX has no standard ops for, so they stay in PyTorch.

How: ``torch.onnx.export``'s dynamo-based exporter (torch.export, then onnxscript's
translation), with an example batch of 2 (a batch of 1 would be specialised) and the three
dimensions marked dynamic. SPANet's Spectral Pooling Filter and SPANetV2's ExSPAM build what
depends on the feature size inside the graph, so one file serves every input size; ExSPAM's
filter is exported as exact real products (:mod:`spanet_mm.models.real_dft`), so the graph
holds no ``DFT``/``STFT`` op and no complex tensor (:func:`check_no_dft` proves it of a file).

The checks (:func:`verify_onnx`): each runtime runs the file at sizes other than the export
size (odd and non-square by default) and its outputs are compared with PyTorch's (eager, the
FFT path). OpenVINO is asked for float32 inference: on CPUs with bfloat16 units its default
precision is bfloat16.
"""

import collections
import copy
import os.path as osp
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import (
    CheckpointError,
    extract_state_dict,
    group_keys,
    load_pretrained,
    read_checkpoint,
)
from ..codebases import (
    TensorOutputs,
    build_backbone,
    build_model,
    classifier_config,
    codebase_of,
    data_samples,
    load_config,
    retinanet_config,
)
from ..models import SpectralBackbone
from ..models.real_dft import matmul

KINDS = ('backbone', 'classifier', 'retinanet', 'segmentor', 'backbone-neck')
# The kinds built from a config only (no model written in code for them).
CONFIG_KINDS = ('segmentor', 'backbone-neck')
RUNTIMES = ('onnxruntime', 'openvino')
EXPORTERS = ('dynamo', 'torchscript')
# Ops a graph must not hold: TensorRT's parser has neither; ONNX Runtime's and OpenVINO's
# DFT kernels fail or are inexact on the one-sided inverse the exporter emits.
FORBIDDEN_OPS = frozenset({'DFT', 'STFT'})
# The dynamo-based exporter's operator library starts at opset 18.
MIN_OPSET = 18
DEFAULT_OPSET = 18
# The example batch of the export: a batch of 1 would fix the batch dimension to 1.
EXPORT_BATCH = 2
INPUT_NAME = 'input'
DYNAMIC_DIMS = ('batch', 'height', 'width')


# -- what to export ---------------------------------------------------------------------------


class NeckFeatures(nn.Module):
    """A detector's backbone and neck (``extract_feat``), for detectors whose heads stay in
    PyTorch."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.detector.extract_feat(x))


class WindowMeanPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two products with window-mean matrices built from the
    input's size, so that a recorded graph serves every size: the dynamo exporter translates
    adaptive pooling (UperNet's pyramid pooling) with the windows of the example's size."""

    def __init__(self, output_size: Tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        rows = window_means(self.output_size[0], x.shape[-2], x.dtype, x.device)
        cols = window_means(self.output_size[1], x.shape[-1], x.dtype, x.device)
        return matmul(matmul(rows, x), cols.t())


def window_means(out: int, size: int, dtype: torch.dtype, device=None) -> Tensor:
    """``(out, size)``: row ``i`` averages adaptive pooling's window ``i``, positions
    ``floor(i size / out)`` to ``ceil((i + 1) size / out)`` (exclusive)."""
    index = torch.arange(out, device=device)[:, None]
    start = index * size // out
    end = ((index + 1) * size + out - 1) // out
    positions = torch.arange(size, device=device)[None, :]
    inside = (positions >= start) & (positions < end)
    return inside.to(dtype) / (end - start).to(dtype)


class ScaledUpsample(nn.Module):
    """MMSegmentation's ``Upsample`` by an integral factor, with the output size kept
    symbolic (the original takes ``int()`` of the scaled sizes, which fixes them in a
    recorded graph); the same values."""

    def __init__(self, factor: int, mode: str, align_corners: Optional[bool]) -> None:
        super().__init__()
        self.factor = factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> Tensor:
        size = [s * self.factor for s in x.shape[-2:]]
        return F.interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners)


def graph_friendly(model: nn.Module) -> nn.Module:
    """Replace, in place, the codebases' modules whose recorded graph would hold the
    example's sizes by equivalents that keep them symbolic (:class:`WindowMeanPool2d`,
    :class:`ScaledUpsample`); returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = _replacement(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    return model


def _replacement(module: nn.Module) -> Optional[nn.Module]:
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return WindowMeanPool2d(size) if None not in size else None
    if type(module).__name__ == 'Upsample' and type(module).__module__.startswith('mmseg.'):
        factor = module.scale_factor
        if module.size is None and isinstance(factor, float) and factor.is_integer():
            return ScaledUpsample(int(factor), module.mode, module.align_corners)
    return None


def build_exportable(
    kind: str,
    model: str = 'spanet:s',
    config: Optional[str] = None,
    checkpoint: Optional[str] = None,
    num_classes: int = 1000,
    arch=None,
    cfg_options: Optional[dict] = None,
    shape: Sequence[int] = (224, 224),
) -> TensorOutputs:
    """The model to export, in eval mode, returning a flat tuple of tensors.

    Args:
        kind (str): One of :data:`KINDS`.
        model (str): Without ``config``: ``spanet:ARCH`` or ``spanetv2:ARCH``.
        config (str, optional): A config file: its model (for ``backbone``, its
            ``model.backbone``) is exported; required for :data:`CONFIG_KINDS`.
        checkpoint (str, optional): Weights to load (:func:`load_weights`).
        num_classes (int): ``classifier`` without ``config``: number of classes.
        arch (str | dict, optional): Replaces the arch of ``model`` (a custom arch dict).
        cfg_options (dict, optional): Overrides of the config (as ``--cfg-options``).
        shape (Sequence[int]): ``(H, W)`` the data samples of a detector or segmentor
            describe (their tensor paths do not read them).
    """
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    if kind in CONFIG_KINDS and config is None:
        raise ValueError(f'{kind} export needs a config file (--config)')
    named = (model.partition(':')[0], arch) if arch is not None else model
    scope = None
    if config is not None:
        cfg = load_config(config, cfg_options)
        scope = None if kind == 'backbone' else codebase_of(cfg)
        built = build_model(cfg, 'backbone' if kind == 'backbone' else None)
    elif kind == 'backbone':
        built = build_backbone(named)
    else:
        scope = 'mmdet' if kind == 'retinanet' else 'mmpretrain'
        cfg = (
            retinanet_config(named)
            if kind == 'retinanet'
            else classifier_config(named, num_classes)
        )
        built = build_model(cfg)
    if kind != 'backbone-neck' and is_two_stage(built):
        raise ValueError(
            f'{type(built).__name__} is a two-stage detector: its RoI heads need mmcv ops '
            '(RoIAlign, NMS) that ONNX has no standard ops for; export its backbone and neck '
            'with the kind backbone-neck'
        )
    loaded = load_weights(built, checkpoint, kind) if checkpoint else None
    if kind == 'backbone-neck':
        wrapper = TensorOutputs(NeckFeatures(built)).eval()
    else:
        wrapper = TensorOutputs(built, data_samples(scope, *shape, batch=EXPORT_BATCH)).eval()
    # What load_weights says it loaded, for the tool's log.
    wrapper.loaded_weights = loaded
    return wrapper


def is_two_stage(model: nn.Module) -> bool:
    """Whether ``model`` is a detector with RoI heads (Mask R-CNN, Cascade R-CNN, ...)."""
    return hasattr(model, 'roi_head') and hasattr(model, 'rpn_head')


def load_weights(model: nn.Module, checkpoint: str, kind: str) -> str:
    """Load ``checkpoint`` into the model to export.

    Accepted: a backbone's own state_dict, a whole model's MMEngine checkpoint (its
    ``state_dict`` entry, ``backbone.*`` keys and the rest) and the authors' release files.
    A backbone reads all of them through :func:`spanet_mm.checkpoint.load_pretrained`. A
    whole model takes a whole model's checkpoint (every tensor must fit); a classifier also
    takes a release file with its ImageNet head; any other file holds a backbone only, which
    is loaded into the model's backbone (the rest keeps its initial values).

    Returns:
        str: What was loaded, for the log.

    Raises:
        CheckpointError: The file is not a checkpoint or does not fit the model.
    """
    backbone = model if kind == 'backbone' else getattr(model, 'backbone', None)
    if backbone is model:
        _load_backbone(model, checkpoint)
        return 'backbone weights'
    state = extract_state_dict(read_checkpoint(checkpoint), checkpoint)
    generation = type(backbone) if isinstance(backbone, SpectralBackbone) else None
    if generation is not None and generation.is_release_layout(state):
        if kind == 'classifier':
            state = generation.release_to_classifier(state)[0]
            _load_whole(model, state, checkpoint)
            return 'the release classifier (backbone and head)'
        load_pretrained(backbone, checkpoint)
        return 'backbone weights from a release file; the rest keeps its initial values'
    if not any(key.startswith('backbone.') for key in state):
        _load_backbone(backbone, checkpoint)
        return "a backbone's weights; the rest keeps its initial values"
    _load_whole(model, state, checkpoint)
    return "the whole model's weights"


def _load_backbone(backbone: nn.Module, checkpoint: str) -> None:
    if isinstance(backbone, SpectralBackbone):
        load_pretrained(backbone, checkpoint)
        return
    state = extract_state_dict(read_checkpoint(checkpoint), checkpoint)
    if any(key.startswith('backbone.') for key in state):
        state = {k[len('backbone.') :]: v for k, v in state.items() if k.startswith('backbone.')}
    _load_whole(backbone, state, checkpoint)


def _load_whole(model: nn.Module, state: Dict[str, Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = [
            f'{label}: {group_keys(keys, own)}'
            for label, keys in (
                ('missing from the file', missing),
                ('not in the model', unexpected),
                ('of another shape', mismatched),
            )
            if keys
        ]
        raise CheckpointError(
            f'{source} does not fit the {type(model).__name__} to export ({"; ".join(parts)})'
        )
    model.load_state_dict(state)


def output_names(kind: str, num_outputs: int) -> List[str]:
    """Names of the graph's outputs."""
    if kind == 'backbone':
        return [f'feat{i}' for i in range(num_outputs)]
    if kind == 'retinanet':
        levels = num_outputs // 2
        return [f'cls_score{i}' for i in range(levels)] + [f'bbox_pred{i}' for i in range(levels)]
    if kind == 'backbone-neck':
        return [f'neck{i}' for i in range(num_outputs)]
    base = 'seg_logits' if kind == 'segmentor' else 'logits'
    return [base] if num_outputs == 1 else [f'{base}{i}' for i in range(num_outputs)]


# -- export ------------------------------------------------------------------------------------


def export_onnx(
    wrapper: nn.Module,
    kind: str,
    path: str,
    shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    exporter: str = 'dynamo',
    optimize: bool = True,
) -> List[str]:
    """Export ``wrapper`` to ``path`` (one file, weights inside) with dynamic batch, height
    and width.

    Args:
        wrapper (nn.Module): Returns a flat tuple of tensors (:class:`TensorOutputs`).
        kind (str): One of :data:`KINDS` (names the outputs).
        path (str): The ``.onnx`` file to write.
        shape (Sequence[int]): ``(H, W)`` of the example input.
        opset (int): ONNX opset, at least :data:`MIN_OPSET`.
        exporter (str): ``'dynamo'`` (torch.export and onnxscript, torch's default) or
            ``'torchscript'`` (``torch.jit.trace``, deprecated in torch but much faster).
        optimize (bool): ``dynamo`` only: run onnxscript's graph optimiser.

    What is recorded is a copy of ``wrapper`` with :func:`graph_friendly` replacements.

    Returns:
        list[str]: The output names.

    Raises:
        ValueError: An unknown exporter, or ``opset`` below :data:`MIN_OPSET`.
        RuntimeError: The written file's input dimensions are not the dynamic ones.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    if opset < MIN_OPSET:
        raise ValueError(
            f'opset {opset}: the dynamo-based exporter writes opset {MIN_OPSET} or later '
            f'(--opset {DEFAULT_OPSET})'
        )
    x = torch.randn(EXPORT_BATCH, 3, *shape)
    with torch.no_grad():
        names = output_names(kind, len(wrapper(x)))
    # A copy is changed, so that checks compare the file with the model as it was built.
    wrapper = graph_friendly(copy.deepcopy(wrapper))
    with torch.no_grad(), warnings.catch_warnings():
        # The dynamo exporter's notes on deprecated pytree internals, the tracer's on
        # Python-side shape checks and the deprecation of the TorchScript exporter do not
        # concern the graph.
        warnings.simplefilter('ignore')
        if exporter == 'dynamo':
            _export_dynamo(wrapper, x, path, names, opset, optimize)
        else:
            _export_torchscript(wrapper, x, path, names, opset)
    found = input_dims(path)
    if found != ['batch', 3, 'height', 'width']:
        raise RuntimeError(f'{path}: input dimensions {found}, expected batch, 3, height, width')
    return names


def _export_dynamo(
    wrapper: nn.Module, x: Tensor, path: str, names: List[str], opset: int, optimize: bool
) -> None:
    dims = {axis: torch.export.Dim(name) for axis, name in zip((0, 2, 3), DYNAMIC_DIMS)}
    program = torch.onnx.export(
        wrapper,
        (x,),
        input_names=[INPUT_NAME],
        output_names=names,
        opset_version=opset,
        dynamo=True,
        dynamic_shapes=(dims,),
        optimize=optimize,
        verbose=False,
    )
    program.save(path, external_data=False)


def _export_torchscript(
    wrapper: nn.Module, x: Tensor, path: str, names: List[str], opset: int
) -> None:
    dynamic = dict(zip((0, 2, 3), DYNAMIC_DIMS))
    torch.onnx.export(
        wrapper,
        (x,),
        path,
        input_names=[INPUT_NAME],
        output_names=names,
        dynamic_axes={name: dynamic for name in [INPUT_NAME] + names},
        opset_version=opset,
        dynamo=False,
    )


def input_dims(path: str) -> List:
    """The graph input's dimensions: names of dynamic ones, sizes of fixed ones."""
    # ONNX is the optional [deploy] extra: imported when a file is read.
    import onnx

    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


# -- what the graph holds ----------------------------------------------------------------------


def _graphs(graph) -> List:
    """A graph and the subgraphs of its control-flow nodes, recursively."""
    # (as in input_dims)
    import onnx

    found = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found += _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    found += _graphs(sub)
    return found


def op_types(path: str) -> Dict[str, int]:
    """How many nodes of each op type the file's graph (with subgraphs and local functions)
    holds, most frequent first."""
    # (as in input_dims)
    import onnx

    model = onnx.load(path, load_external_data=False)
    counts = collections.Counter(
        node.op_type for graph in _graphs(model.graph) for node in graph.node
    )
    counts.update(node.op_type for function in model.functions for node in function.node)
    return dict(counts.most_common())


def check_no_dft(path: str) -> List[str]:
    """What breaks the guarantee of a graph without DFT ops: ``DFT``/``STFT`` nodes, and
    complex tensors (inputs, outputs, weights, annotated values, ``Cast`` targets).

    Returns:
        list[str]: One line per violation; empty when the guarantee holds.
    """
    # (as in input_dims)
    import onnx

    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    model = onnx.load(path, load_external_data=False)
    problems = []
    nodes = [node for graph in _graphs(model.graph) for node in graph.node]
    nodes += [node for function in model.functions for node in function.node]
    for node in nodes:
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f'{node.op_type} node {node.name!r}')
        if node.op_type == 'Cast' and any(
            a.name == 'to' and a.i in complex_types for a in node.attribute
        ):
            problems.append(f'Cast to a complex type: {node.name!r}')
    for graph in _graphs(model.graph):
        values = list(graph.input) + list(graph.output) + list(graph.value_info)
        problems += [
            f'complex value {v.name!r}'
            for v in values
            if v.type.tensor_type.elem_type in complex_types
        ]
        problems += [
            f'complex weight {t.name!r}' for t in graph.initializer if t.data_type in complex_types
        ]
    return problems


# -- checks in the runtimes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One runtime's largest absolute difference from PyTorch at one input size."""

    runtime: str
    height: int
    width: int
    max_abs_diff: float


def runtime_session(
    runtime: str,
    path: str,
    threads: Optional[int] = None,
    static_shape: Optional[Sequence[int]] = None,
    precision: str = 'f32',
) -> Callable:
    """``run(array) -> list of arrays`` of ``path`` in ``runtime`` (CPU).

    Args:
        runtime (str): One of :data:`RUNTIMES`.
        path (str): The ONNX file.
        threads (int, optional): Intra-op threads (the runtime's default otherwise); then
            also one stream, no inter-op parallelism, and no spinning of idle threads (ONNX
            Runtime's workers spin by default, which takes the cores from anything else the
            process runs between calls), OpenVINO with its latency hint.
        static_shape (Sequence[int], optional): OpenVINO only: ``(N, 3, H, W)``, the one
            input shape the compiled model serves (OpenVINO then plans for that shape, as
            for a deployment at one size); the file's dynamic shape otherwise.
        precision (str): ``'f32'`` (default) or ``'bf16'`` (OpenVINO only, on a CPU with
            bfloat16 units; OpenVINO's default on such CPUs is bf16, so f32 is asked for).

    Raises:
        ValueError: An unknown runtime or precision, or one the runtime does not take.
    """
    if precision not in ('f32', 'bf16'):
        raise ValueError(f"precision must be 'f32' or 'bf16', got {precision!r}")
    if runtime == 'onnxruntime':
        if precision != 'f32' or static_shape is not None:
            raise ValueError(
                'onnxruntime sessions run the file as it is: float32 and its dynamic shape, '
                f'got precision={precision!r}, static_shape={static_shape}'
            )
        # The runtimes are the optional [deploy] extra: imported when a file is run.
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
            options.add_session_config_entry('session.inter_op.allow_spinning', '0')
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        return lambda array: session.run(None, {INPUT_NAME: array})
    if runtime == 'openvino':
        # (as above)
        import openvino as ov

        core = ov.Core()
        model = core.read_model(path)
        if static_shape is not None:
            model.reshape({INPUT_NAME: ov.PartialShape([int(s) for s in static_shape])})
        config = {'INFERENCE_PRECISION_HINT': precision}
        if threads:
            config.update(INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1, PERFORMANCE_HINT='LATENCY')
        compiled = core.compile_model(model, 'CPU', config)
        return lambda array: [out for out in compiled(array).values()]
    raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')


def verify_onnx(
    wrapper: nn.Module,
    path: str,
    shapes: Sequence[Sequence[int]],
    batch: int = EXPORT_BATCH,
    runtimes: Sequence[str] = RUNTIMES,
) -> List[Check]:
    """Largest absolute difference between each runtime (CPU) and PyTorch at each shape.

    Raises:
        AssertionError: A runtime gives another number or shape of outputs than PyTorch.
    """
    # (as in input_dims)
    import onnx

    onnx.checker.check_model(path)
    sessions = {runtime: runtime_session(runtime, path) for runtime in runtimes}
    checks = []
    for height, width in shapes:
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = wrapper(x)
        for runtime, run in sessions.items():
            got = run(x.numpy())
            checks.append(Check(runtime, height, width, _max_diff(runtime, got, expected)))
    return checks


def _max_diff(runtime: str, got: Sequence, expected: Sequence[Tensor]) -> float:
    if len(got) != len(expected):
        raise AssertionError(f'{runtime} gave {len(got)} outputs, PyTorch {len(expected)}')
    worst = 0.0
    for ours, theirs in zip(got, expected):
        if tuple(ours.shape) != tuple(theirs.shape):
            raise AssertionError(
                f'{runtime}: output shape {tuple(ours.shape)}, PyTorch {tuple(theirs.shape)}'
            )
        worst = max(worst, (torch.from_numpy(ours) - theirs).abs().max().item())
    return worst


def default_check_shapes(shape: Sequence[int]) -> List[Tuple[int, int]]:
    """Three sizes other than the export size, all odd and non-square: larger, much larger
    and smaller."""
    height, width = shape
    sizes = [
        (height + 33, width - 31),
        (height * 3 // 2 + 7, width + 45),
        (height // 2 + 1, width // 3 + 5),
    ]
    return [(h | 1, w | 1) for h, w in sizes]


# -- what the tool does ------------------------------------------------------------------------


def export_and_verify(
    kind: str,
    out: str,
    model: str = 'spanet:s',
    config: Optional[str] = None,
    checkpoint: Optional[str] = None,
    num_classes: int = 1000,
    shape: Sequence[int] = (224, 224),
    opset: int = DEFAULT_OPSET,
    verify: bool = False,
    verify_shapes: Optional[Sequence[Sequence[int]]] = None,
    atol: float = 1e-4,
    log: Callable[[str], None] = print,
    cfg_options: Optional[dict] = None,
    runtimes: Sequence[str] = RUNTIMES,
    arch=None,
    exporter: str = 'dynamo',
) -> bool:
    """What ``tools/deployment/export_onnx.py`` does: build, export, list the graph's op
    types, check that it holds no DFT op or complex tensor and, with ``verify``, compare each
    runtime with PyTorch at ``verify_shapes`` (default :func:`default_check_shapes`).

    Returns:
        bool: Whether every check passed.
    """
    wrapper = build_exportable(
        kind, model, config, checkpoint, num_classes, arch, cfg_options, shape
    )
    if checkpoint:
        log(f'loaded {checkpoint}: {wrapper.loaded_weights}')
    names = export_onnx(wrapper, kind, out, shape, opset, exporter)
    size = osp.getsize(out) / 2**20
    log(f'wrote {out} ({size:.1f} MiB): input (batch, 3, height, width) -> {", ".join(names)}')
    counts = op_types(out)
    log(
        f'op types ({sum(counts.values())} nodes): '
        + ', '.join(f'{op} {n}' for op, n in counts.items())
    )
    problems = check_no_dft(out)
    if problems:
        log(f'FAILED: the graph holds DFT ops or complex tensors: {"; ".join(problems[:5])}')
    else:
        log('guarantee: no DFT or STFT op, no complex tensor')
    passed = not problems
    if kind == 'backbone-neck':
        log(
            'backbone-neck: the file holds the backbone and the neck; the RPN and RoI heads '
            '(mmcv RoIAlign and NMS, no standard ONNX ops) stay in PyTorch'
        )
    if verify:
        checks = verify_onnx(
            wrapper, out, verify_shapes or default_check_shapes(shape), runtimes=runtimes
        )
        for check in checks:
            ok = check.max_abs_diff <= atol
            passed &= ok
            log(
                f'  {check.runtime:<11} {check.height}x{check.width}: max |runtime - PyTorch| = '
                f'{check.max_abs_diff:.2e} {"ok" if ok else f"> {atol:g} FAILED"}'
            )
    return passed
